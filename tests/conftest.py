"""Shared fixtures: the tiny synthetic corpus and helpers to run the recipe."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech"
sys.path.insert(0, str(RECIPE))

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_corpus():
    """The tiny synthetic corpus (generated once, cached like the default one)."""
    from s3brain.data.synthetic import generate

    return generate(size="tiny", progress=False)


def run_recipe(*args, cwd=REPO, env=None, timeout=600, launcher=None, script=RECIPE / "train.py"):
    """Run a recipe script (LibriSpeech ``train.py`` by default); return the CompletedProcess."""
    cmd = (launcher or [sys.executable]) + [str(script), *map(str, args)]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
