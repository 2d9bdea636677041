"""Helpers every folder may use: the results format, checkpoints, FLOPs and latency, what a
record may say of its machine and paths (``provenance``), and the redirects of old import
paths."""
