"""Surg-R1 site node: everything that runs inside a hospital."""
