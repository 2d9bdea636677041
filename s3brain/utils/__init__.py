"""Helpers every folder may use: the results format, checkpoints, FLOPs and latency, and the
redirects of old import paths."""
