"""Experiment recipes shared by the examples and the benchmarks."""
