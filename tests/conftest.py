"""Shared fixtures: the tiny synthetic corpus and helpers to run the recipe; the markers.

Unit tests are in ``tests/unit/``, recipe runs in ``tests/integration/``: every test under
``tests/integration/`` is marked ``integration``, every other one (unit tests, doctests) ``unit``,
so ``pytest -m "not integration"`` (or ``-m unit``) runs the fast part. This folder is on
``sys.path`` (pytest's prepend import mode), so tests in both import from here.
"""

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from s3brain.tiny_models import FAMILY_LAYOUTS, write_tiny_model  # noqa: F401 (tests import them from here)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech"
sys.path.insert(0, str(RECIPE))

TESTS = Path(__file__).resolve().parent
INTEGRATION = TESTS / "integration"
#: the columns of SpeechBrain's recipe-test CSVs (``tests/recipes/<Dataset>.csv``)
RECIPE_INDEX_COLUMNS = ["Task", "Dataset", "Script_file", "Hparam_file", "Data_prep_file",
                        "Readme_file", "Result_url", "HF_repo", "test_debug_flags",
                        "test_debug_checks", "performance"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# pytest-xdist runs one worker per core (setup.cfg: -n auto): give each worker, and the recipe
# runs it starts, its share of the cores, not all of them, or the workers slow each other down.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_configure(config):
    """Register the markers; refuse test files of one name in two folders."""
    config.addinivalue_line("markers", "integration: runs a recipe end to end (tests/integration/)")
    config.addinivalue_line("markers", "unit: a unit test or doctest (everything else)")
    names = Counter(p.name for folder in (TESTS, TESTS / "unit", INTEGRATION)
                    for p in folder.glob("test_*.py"))
    shared = sorted(name for name, count in names.items() if count > 1)
    if shared:  # pytest's default import mode imports a test file by its name alone
        raise pytest.UsageError(f"{', '.join(shared)}: more than one test file of this name under "
                                "tests/; rename one (recipe runs: test_<module>_recipes.py)")


def pytest_collection_modifyitems(config, items):
    """Mark each test by its folder: ``integration`` under tests/integration/, else ``unit``."""
    for item in items:
        if INTEGRATION in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def tiny_corpus():
    """The tiny synthetic corpus (generated once, cached like the default one)."""
    from s3brain.data.synthetic import generate

    return generate(size="tiny", progress=False)


def run_recipe(*args, cwd=REPO, env=None, timeout=600, launcher=None, script=RECIPE / "train.py"):
    """Run a recipe script (LibriSpeech ``train.py`` by default); return the CompletedProcess.

    The int8 deployment's error rates (``int8_eval``: every test utterance decoded again, in
    fp32 and int8) are left out unless a test asks for them (``--int8_eval=True``): the tests
    that check them do; for the others they would only add time. Its latency is measured by
    every run all the same."""
    args = [str(a) for a in args]
    yaml = next((Path(a) if Path(a).is_absolute() else Path(cwd) / a for a in args
                 if a.endswith(".yaml")), None)
    if (yaml is not None and yaml.is_file() and "int8_eval:" in yaml.read_text()
            and not any(a.startswith("--int8_eval") for a in args)):
        args.append("--int8_eval=False")
    cmd = (launcher or [sys.executable]) + [str(script), *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def recipe_index_rows():
    """``[(dataset, row)]`` of every ``tests/recipes/<Dataset>.csv``, its columns checked."""
    rows = []
    for index in sorted((REPO / "tests" / "recipes").glob("*.csv")):
        with open(index, encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == RECIPE_INDEX_COLUMNS, index
            rows += [(index.stem, row) for row in reader]
    return rows


@pytest.fixture(scope="session")
def tiny_family_models(tmp_path_factory):
    """``{(family, layout): folder}`` of tiny random-init models of every family and layout."""
    root = tmp_path_factory.mktemp("families")
    return {(family, layout): write_tiny_model(root / f"{family}-{layout}", family, layout)
            for family, layout in FAMILY_LAYOUTS}
