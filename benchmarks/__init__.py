"""Benchmarks kept by the repo (`make bench`): ratios against baselines measured in the same run."""
