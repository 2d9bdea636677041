"""Comparing strategies: launching one run per yaml (``launch``), collecting their
``results.json`` (``collect``), tables and plots (``tables``), seeds and paired intervals
(``stats``); ``python -m s3brain.compare`` (``cli``) does all of it. It reads runs' records
only: nothing here imports the recipes or the training code."""
