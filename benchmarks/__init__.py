"""Benchmarks and probes of deepfake_fastai, outside the installed package (they import only its API)."""
