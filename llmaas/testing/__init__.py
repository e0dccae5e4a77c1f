"""Helpers shared by the test suite and benchmarks (tiny random models). Not imported by the server."""
