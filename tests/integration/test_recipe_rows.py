"""Each row of tests/recipes/<Dataset>.csv (SpeechBrain's recipe-test format) runs in debug mode
and leaves the files it lists."""

import re
import shlex

import pytest
from conftest import RECIPE, REPO, recipe_index_rows, run_recipe


@pytest.fixture(scope="session")
def finetuned_folder(tiny_corpus, tmp_path_factory):
    """A weight fine-tuning run with a real checkpoint (debug runs keep none), for the rows that
    start from one (``--init_from=``)."""
    out = tmp_path_factory.mktemp("weight_ft_full")
    proc = run_recipe(str(RECIPE / "hparams" / "weight_ft.yaml"), "--synthetic_size=tiny",
                      "--number_of_epochs=1", "--cost_repeats=1", "--lm_decoding=False",
                      f"--output_folder={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def salad_detector_folder(finetuned_folder, tmp_path_factory):
    """A SALAD detector trained (briefly) with the fine-tuned run as its teacher."""
    out = tmp_path_factory.mktemp("salad_detector")
    proc = run_recipe(str(RECIPE / "hparams" / "salad" / "detector.yaml"), "--synthetic_size=tiny",
                      "--number_of_epochs=2", f"--teacher_from={finetuned_folder}",
                      f"--output_folder={out}", script=RECIPE / "train_salad.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# Rows that start from earlier runs get this session's: a fine-tuned model (init_from, the
# teacher of SALAD) and a SALAD detector.
NEEDS = {"--init_from=": "finetuned_folder", "--teacher_from=": "finetuned_folder",
         "--salad_detector=": "salad_detector_folder"}


def _distinct_runs(rows):
    """The rows, less those that would run exactly as an earlier one here (a CSV may repeat
    another's row to make what a later row of its own needs, as CommonVoice.csv does for the
    English SALAD detector: upstream's runner takes the CSVs one after the other)."""
    seen, distinct = set(), []
    for row in rows:
        flags = tuple(next((p for p in NEEDS if f.startswith(p)), f)
                      for f in shlex.split(row["test_debug_flags"])
                      if not f.startswith("--output_folder"))
        key = (row["Script_file"], row["Hparam_file"], flags)
        if key not in seen:
            seen.add(key)
            distinct.append(row)
    return distinct


@pytest.mark.parametrize("row", _distinct_runs([r for _, r in recipe_index_rows()]),
                         ids=lambda r: r["Hparam_file"])
def test_row_runs_in_debug_mode(row, tmp_path, request):
    flags = [f for f in shlex.split(row["test_debug_flags"]) if not f.startswith("--output_folder")]
    for prefix, fixture in NEEDS.items():
        if any(f.startswith(prefix) for f in flags):
            folder = request.getfixturevalue(fixture)
            flags = [f"{prefix}{folder}" if f.startswith(prefix) else f for f in flags]
    out = tmp_path / "out"
    hparams = str(REPO / row["Hparam_file"])
    proc = run_recipe(hparams, "--debug", *flags, f"--output_folder={out}",
                      script=REPO / row["Script_file"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = re.fullmatch(r"file_exists=\[(.*)\]", row["test_debug_checks"]).group(1).split(",")
    missing = [name for name in expected if not (out / name).exists()]
    assert not missing
