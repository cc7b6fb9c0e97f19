"""Synthetic data and the tiny model: demo and test support, not run by a hospital's studies."""
