"""Shared fixtures: the tiny synthetic corpus and helpers to run the recipe; the markers.

Unit tests are in ``tests/unit/``, recipe runs in ``tests/integration/``: every test under
``tests/integration/`` is marked ``integration``, every other one (unit tests, doctests) ``unit``,
so ``pytest -m "not integration"`` (or ``-m unit``) runs the fast part. This folder is on
``sys.path`` (pytest's prepend import mode), so tests in both import from here.
"""

import csv
import os
import re
import subprocess
import sys
from collections import Counter, namedtuple
from pathlib import Path

import pytest

from s3brain.backbone.tiny_models import FAMILY_LAYOUTS, write_tiny_model  # noqa: F401 (tests import them from here)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech"
sys.path.insert(0, str(RECIPE))

TESTS = Path(__file__).resolve().parent
INTEGRATION = TESTS / "integration"
#: the columns of SpeechBrain's recipe-test CSVs (``tests/recipes/<Dataset>.csv``)
RECIPE_INDEX_COLUMNS = ["Task", "Dataset", "Script_file", "Hparam_file", "Data_prep_file",
                        "Readme_file", "Result_url", "HF_repo", "test_debug_flags",
                        "test_debug_checks", "performance"]

#: exported folders kept as test data (their custom.py is not a test module)
collect_ignore = ["fixtures"]

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


#: imported once by the fork server that starts the recipe runs (see ``run_recipe``)
PRELOAD = ["torch", "torchaudio", "transformers", "speechbrain", "speechbrain.integrations.huggingface",
           "s3brain.training.experiment", "s3brain.strategies", "s3brain.deployment.model", "onnxruntime"]


def _forked_main(argv, cwd, env, stdout, stderr):
    """The body of a process forked from the fork server: ``python *argv`` (a script, ``-m
    module`` or ``-c code``) as the interpreter would run it, its imports of ``PRELOAD`` done."""
    import atexit
    import runpy
    import traceback

    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(env)
    if env.get("OMP_NUM_THREADS", "").isdigit() and "torch" in sys.modules:  # read at its import
        sys.modules["torch"].set_num_threads(int(env["OMP_NUM_THREADS"]))
    os.chdir(cwd)
    code = 0
    try:
        if argv[0] == "-m":  # sys.path[0]: the working folder, as for python -m
            sys.argv, sys.path[0:0] = [argv[1], *argv[2:]], [os.getcwd()]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv, sys.path[0:0] = ["-c", *argv[2:]], [""]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv, sys.path[0:0] = list(argv), [str(Path(argv[0]).resolve().parent)]
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        if isinstance(stop.code, int) or stop.code is None:
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: B036 (as the interpreter would: traceback, status 1)
        traceback.print_exc()
        code = 1
    finally:
        atexit._run_exitfuncs()
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_python(*argv, cwd=REPO, env=None, timeout=600):
    """``subprocess.run([python, *argv], capture_output=True, text=True)``, forked from a server
    that imported ``PRELOAD`` once: each run is still a process of its own, without the seconds
    that importing torch, transformers and SpeechBrain costs every new interpreter here.
    ``env`` adds variables read at run time (not those read when the preloaded modules are
    imported); ``S3BRAIN_TEST_FORK=0`` starts a fresh interpreter instead."""
    import multiprocessing
    import tempfile

    argv = [str(a) for a in argv]
    cmd = [sys.executable, *argv]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if os.environ.get("S3BRAIN_TEST_FORK", "1") != "1":
        return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                              timeout=timeout)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        proc = ctx.Process(target=_forked_main, args=(argv, str(cwd), full_env, out, err))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(cmd, timeout)
        return subprocess.CompletedProcess(cmd, proc.exitcode, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))


#: recipe settings a test run gets unless it gives them (see ``run_recipe``)
TEST_DEFAULTS = {"int8_eval": "False", "lm_beam_width": "4"}


def run_recipe(*args, cwd=REPO, env=None, timeout=600, launcher=None, script=RECIPE / "train.py"):
    """Run a recipe script (LibriSpeech ``train.py`` by default); return the CompletedProcess.

    Without ``launcher`` the process is forked from a server that has imported torch,
    transformers and SpeechBrain once (``run_python``), not started from nothing.

    Two settings that only add time to a test are changed unless the test gives them
    (``TEST_DEFAULTS``): the int8 deployment's error rates (``int8_eval``: every test utterance
    decoded again, in fp32 and int8) are left out (its latency is measured all the same), and
    the LM beam search keeps 4 beams, not 50 (over the near-uniform outputs of a barely trained
    model no beam is pruned, and 50 cost most of a debug run)."""
    args = [str(a) for a in args]
    yaml = next((Path(a) if Path(a).is_absolute() else Path(cwd) / a for a in args
                 if a.endswith(".yaml")), None)
    text = yaml.read_text() if yaml is not None and yaml.is_file() else ""
    for key, value in TEST_DEFAULTS.items():
        if f"\n{key}:" in text and not any(a.startswith(f"--{key}") for a in args):
            args.append(f"--{key}={value}")
    if launcher is None:
        return run_python(script, *args, cwd=cwd, env=env, timeout=timeout)
    cmd = [*launcher, str(script), *args]
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


# SpeechBrain's performance check of a recipe row (``tests/utils/recipe_tests.py`` upstream:
# ``check_performance``, ``extract_value``, ``check_threshold``), the same semantics here so that
# the project's row test enforces what upstream's runner does. The entry
# ``performance_check=[train_log.txt, train loss, <=4.36, epoch: 2]`` of a row's
# ``test_debug_checks`` reads ``train loss`` from the first line of ``train_log.txt`` that
# contains ``epoch: 2`` (with ``epoch: -1``: from the file's last line when no line contains
# it) and fails unless it is ``<=4.36``. Only the first entry of a row counts; only values written
# with a decimal point are read.

PerformanceCheck = namedtuple("PerformanceCheck", "file variable threshold epoch")


def parse_performance_check(check_str):
    """The first ``performance_check=[file, variable, threshold, epoch]`` entry of a row's
    ``test_debug_checks`` (None without one).

    Example
    -------
    >>> parse_performance_check("file_exists=[a],performance_check=[log.txt, loss, <=2, epoch: 2]")
    PerformanceCheck(file='log.txt', variable='loss', threshold='<=2', epoch='epoch: 2')
    """
    found = re.search(r"performance_check=\[(.*?)\]", check_str)
    if found is None:
        return None
    fields = [field.strip() for field in found.group(1).split(",")]
    return PerformanceCheck(*fields[:4])


def extract_value(string, key):
    """The number written after ``key:`` in ``string`` (as text), None if there is none; only a
    number with a decimal point counts.

    Example
    -------
    >>> line = "Epoch loaded: 49 - test loss: 4.71e-01, test PER: 14.21"
    >>> extract_value(line, "test loss"), extract_value(line, "test PER")
    ('4.71e-01', '14.21')
    >>> extract_value("epoch: 2, train loss: 4", "train loss") is None
    True
    """
    pattern = rf"(?P<key>{re.escape(key)})\s*:\s*(?P<value>[-+]?\d*\.\d+([eE][-+]?\d+)?)"
    match = re.search(pattern, string)
    return match.group("value") if match else None


def check_threshold(threshold, value):
    """Whether ``value`` meets ``threshold`` (``<=4.36``, ``>=0.485``, ``<5``, ``>1``, ``==2``).

    Example
    -------
    >>> check_threshold("<=4.36", 4.23), check_threshold("<=4.36", 4.44), check_threshold("5", 5.0)
    (True, False, False)
    """
    bound = float(threshold.strip().replace("=", "").replace(">", "").replace("<", ""))
    if "==" in threshold:
        return value == bound
    if ">=" in threshold:
        return value >= bound
    if ">" in threshold:
        return value > bound
    if "<=" in threshold:
        return value <= bound
    if "<" in threshold:
        return value < bound
    return False


def performance_value(check, output_folder):
    """The value a ``PerformanceCheck`` reads in a run's ``output_folder``, as upstream reads it.

    Raises
    ------
    ValueError
        When the file, its line or the variable is missing (the message says which).
    """
    path = Path(output_folder) / check.file
    if not path.exists():
        raise ValueError(f"{path} does not exist (needed for the performance check)")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    matching = [line for line in lines if check.epoch in line]
    if int(check.epoch.split(":")[-1].strip()) == -1:
        matching.append(([line for line in lines if line.strip()] or [""])[-1])
    if not matching:
        raise ValueError(f"no entries {check.epoch} in {path}")
    value = extract_value(matching[0], check.variable)
    if value is None:
        raise ValueError(f"{path} has no value of {check.variable} in its line "
                         f"{matching[0].strip()!r}")
    return float(value)


def check_performance(check_str, output_folder):
    """Why a row's run in ``output_folder`` fails its performance check; None when it passes
    (or has none): SpeechBrain's ``check_performance``, with the message it would log.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "train_log.txt").write_text(
    ...     "epoch: 1, lr: 1.00e-03 - train loss: 7.54 - valid loss: 4.71\\n"
    ...     "epoch: 2, lr: 1.00e-03 - train loss: 4.23 - valid loss: 3.37\\n")
    >>> check_performance("performance_check=[train_log.txt, train loss, <=4.36, epoch: 2]", folder)
    >>> check_performance("performance_check=[train_log.txt, train loss, <=4.2, epoch: 2]", folder)
    'train loss of train_log.txt is 4.23, outside the threshold <=4.2 (epoch: 2)'
    """
    check = parse_performance_check(check_str)
    if check is None:
        return None
    try:
        value = performance_value(check, output_folder)
    except ValueError as err:
        return str(err)
    if check_threshold(check.threshold, value):
        return None
    return (f"{check.variable} of {check.file} is {value:g}, outside the threshold "
            f"{check.threshold} ({check.epoch})")


# The error rates a recipe writes twice: in ``results.json`` (``split_results``: rounded to 2
# decimals) and in SpeechBrain's error-rate files (``ErrorRateStats.write_stats``), whose first
# line is ``%WER 12.34 [ 5 / 40, 1 ins, 2 del, 2 sub ]``. LibriSpeech writes ``wer_<split>.txt``
# and, with the LM, ``wer_lm_<split>.txt``; CommonVoice ``per_test.txt`` (its phoneme error rate,
# under SpeechBrain's ``%WER`` label).

#: ``wer_test-clean.txt`` -> (``wer``, ``""``, ``test-clean``); ``wer_lm_...`` -> (.., ``lm_``, ..)
ERROR_FILE_NAME = r"(wer|per|cer)_(lm_)?(.+)\.txt"


def read_error_file(path):
    """The summary of an error-rate file: ``(rate, edits, scored tokens)``, the rate in % as
    written (2 decimals).

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "wer_test-clean.txt"
    >>> _ = path.write_text("%WER 41.18 [ 28 / 68, 2 ins, 20 del, 6 sub ]\\n%SER 100.00 [ 8 / 8 ]")
    >>> read_error_file(path)
    (41.18, 28, 68)
    """
    import re

    first = Path(path).read_text(encoding="utf-8").split("\n", 1)[0]
    found = re.match(r"%WER (\d+\.\d\d) \[ (\d+) / (\d+),", first)
    if found is None:
        raise ValueError(f"{path}: no '%WER <rate> [ <edits> / <tokens>, ...' first line: "
                         f"{first!r}")
    return float(found[1]), int(found[2]), int(found[3])


def error_file_key(name):
    """The ``results.json`` key of an error-rate file's name, None for another file.

    Example
    -------
    >>> [error_file_key(n) for n in ("wer_test-clean.txt", "wer_lm_test-other.txt", "per_test.txt",
    ...                               "train_log.txt")]
    ['wer_test_clean', 'wer_test_other_lm', 'per_test', None]
    """
    import re

    found = re.fullmatch(ERROR_FILE_NAME, name)
    if found is None:
        return None
    metric, lm, split = found.groups()
    return f"{metric}_{split.replace('-', '_')}" + ("_lm" if lm else "")


def assert_results_match_error_files(folder):
    """Every error-rate file of a run folder gives the rate ``results.json`` reports (to its 2
    decimals), that rate is ``100 * edits / tokens`` of the file, and every greedy or LM error
    rate of ``results.json`` (``wer_*``, ``per_*``; not the int8 model's, which has no file) has
    its file. Returns ``{results key: (rate, edits, scored tokens)}``."""
    import json

    folder = Path(folder)
    results = json.loads((folder / "results.json").read_text())
    files = {error_file_key(p.name): p for p in sorted(folder.glob("*.txt"))}
    files.pop(None, None)
    assert files, f"{folder}: no error-rate file"
    summaries = {}
    for key, path in files.items():
        rate, edits, scored = summaries[key] = read_error_file(path)
        assert key in results, f"{path.name} has no {key} in results.json"
        assert results[key] == rate, f"{key}: {results[key]} in results.json, {rate} in {path.name}"
        assert round(100 * edits / scored, 2) == rate, (path.name, rate, edits, scored)
    reported = {k for k in results.get("metric_keys", results)
                if k.split("_")[0] in ("wer", "per") and not k.endswith("_int8")}
    assert reported <= set(files), f"{folder}: no file for {sorted(reported - set(files))}"
    return summaries


def logged_value(folder, line_with, key):
    """The number logged as ``<key>: <number>`` in the first line of a run's ``train_log.txt``
    that contains ``line_with`` (``epoch: 2``, ``test split: test-clean``).

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "train_log.txt").write_text(
    ...     "epoch: 1, lr: 1.00e-03 - train loss: 7.54 - valid loss: 4.71, valid WER: 1.00e+02\\n"
    ...     "Epoch loaded: 1, test split: test-clean - test loss: 4.85, test WER: 1.00e+02\\n")
    >>> logged_value(folder, "epoch: 1", "train loss")
    7.54
    >>> logged_value(folder, "test split: test-clean", "test WER")
    100.0
    """
    import re

    lines = [line for line in (Path(folder) / "train_log.txt").read_text().splitlines()
             if line_with in line]
    assert lines, f"{folder}/train_log.txt: no line with {line_with!r}"
    found = re.search(rf"{re.escape(key)}: ([-+0-9.e]+)", lines[0])
    assert found, f"{folder}/train_log.txt: no {key!r} in {lines[0]!r}"
    return float(found[1])
