"""Benchmarks: each module prints its figures; none is part of the test run."""
