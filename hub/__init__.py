"""Surg-R1 hub: study coordination, aggregation and the results store."""
