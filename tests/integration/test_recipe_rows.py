"""Each row of tests/recipes/<Dataset>.csv (SpeechBrain's recipe-test format) runs as
SpeechBrain's recipe-test runner runs it, leaves the files it lists and meets its performance
check (``performance_check=[...]`` in ``test_debug_checks``: ``tests/recipes/README.md``)."""

import re
import shlex

import pytest
from conftest import REPO, check_performance, recipe_index_rows, run_recipe

# Rows that start from earlier runs get this session's, made by the rows that make them upstream
# (in the runner's order they run first): LibriSpeech's weight fine-tuning row (init_from, the
# teacher of SALAD) and its SALAD detector row.
NEEDS = {"--init_from=": "finetuned_folder", "--teacher_from=": "finetuned_folder",
         "--salad_detector=": "salad_detector_folder"}


def runner_flags(row):
    """The flags SpeechBrain's runner gives a row, less ``--output_folder``: the row's own, then
    ``--device=cpu``, then ``--debug --debug_persistently`` unless the row has a performance
    check (a row with one is a debug run only if its flags say so)."""
    flags = [f for f in shlex.split(row["test_debug_flags"]) if not f.startswith("--output_folder")]
    flags.append("--device=cpu")
    if "performance_check" not in row["test_debug_checks"]:
        flags += ["--debug", "--debug_persistently"]
    return flags


def run_row(row, out, request):
    """Run ``row`` into ``out``, the runs it starts from taken from this session's fixtures."""
    flags = runner_flags(row)
    for prefix, fixture in NEEDS.items():
        if any(f.startswith(prefix) for f in flags):
            folder = request.getfixturevalue(fixture)
            flags = [f"{prefix}{folder}" if f.startswith(prefix) else f for f in flags]
    return run_recipe(str(REPO / row["Hparam_file"]), *flags, f"--output_folder={out}",
                      script=REPO / row["Script_file"])


def _librispeech_row(hparams):
    return next(row for dataset, row in recipe_index_rows()
                if dataset == "LibriSpeech" and row["Hparam_file"] == hparams)


@pytest.fixture(scope="session")
def finetuned_folder(tiny_corpus, tmp_path_factory, request):
    """LibriSpeech's weight fine-tuning row, run as its row says (``--debug_persistently``
    keeps its checkpoint), for the rows that start from it."""
    out = tmp_path_factory.mktemp("LibriSpeech_weight_ft")
    proc = run_row(_librispeech_row("recipes/LibriSpeech/hparams/weight_ft.yaml"), out, request)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def salad_detector_folder(finetuned_folder, tmp_path_factory, request):
    """LibriSpeech's SALAD detector row, with the fine-tuned run as its teacher."""
    out = tmp_path_factory.mktemp("LibriSpeech_salad_detector")
    proc = run_row(_librispeech_row("recipes/LibriSpeech/hparams/salad/detector.yaml"), out,
                   request)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _distinct_runs(rows):
    """The rows, less those that would run exactly as an earlier one here (a CSV may repeat
    another's row to make what a later row of its own needs, as CommonVoice.csv does for the
    English SALAD detector: upstream's runner takes the CSVs one after the other)."""
    seen, distinct = set(), []
    for row in rows:
        flags = tuple(next((p for p in NEEDS if f.startswith(p)), f) for f in runner_flags(row))
        key = (row["Script_file"], row["Hparam_file"], flags, row["test_debug_checks"])
        if key not in seen:
            seen.add(key)
            distinct.append(row)
    return distinct


@pytest.mark.parametrize("row", _distinct_runs([r for _, r in recipe_index_rows()]),
                         ids=lambda r: r["Hparam_file"])
def test_row_runs_and_meets_its_checks(row, tmp_path, request):
    out = tmp_path / "out"
    proc = run_row(row, out, request)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = re.search(r"file_exists=\[(.*?)\]", row["test_debug_checks"]).group(1).split(",")
    missing = [name for name in expected if not (out / name).exists()]
    assert not missing
    problem = check_performance(row["test_debug_checks"], out)
    assert problem is None, f"{row['Hparam_file']}: {problem}"
