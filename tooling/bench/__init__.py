"""Benchmarks: each prints its figure next to a naive baseline measured in the
same run, so the ratio holds on a noisy shared machine. Not tests."""
