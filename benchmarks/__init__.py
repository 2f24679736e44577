"""Benchmarks: each prints rh_iac against the raw dependency, measured in the same run."""
