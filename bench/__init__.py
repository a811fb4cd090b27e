"""Benchmarks: `make bench` runs every suite registered in `bench.__main__`."""
