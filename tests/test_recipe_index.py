"""tests/recipes/<Dataset>.csv in SpeechBrain's recipe-test format: complete, and each row runs."""

import csv
import re
import shlex

import pytest
from conftest import REPO, run_recipe

COLUMNS = ["Task", "Dataset", "Script_file", "Hparam_file", "Data_prep_file", "Readme_file",
           "Result_url", "HF_repo", "test_debug_flags", "test_debug_checks", "performance"]


def _rows():
    rows = []
    for index in sorted((REPO / "tests" / "recipes").glob("*.csv")):
        with open(index, encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == COLUMNS, index
            rows += [(index.stem, row) for row in reader]
    return rows


def test_every_yaml_is_listed_and_every_listed_file_exists():
    rows = _rows()
    listed = {row["Hparam_file"] for _, row in rows}
    for yaml in sorted((REPO / "recipes").rglob("hparams/*.yaml")):
        assert str(yaml.relative_to(REPO)) in listed, f"{yaml} missing from tests/recipes/"
    for dataset, row in rows:
        assert row["Dataset"] == dataset
        for key in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
            if row[key]:
                assert (REPO / row[key]).is_file(), f"{row[key]} listed but missing"


@pytest.mark.parametrize("row", [r for _, r in _rows()], ids=lambda r: r["Hparam_file"])
def test_row_runs_in_debug_mode(row, tmp_path):
    flags = [f for f in shlex.split(row["test_debug_flags"]) if not f.startswith("--output_folder")]
    out = tmp_path / "out"
    hparams = str(REPO / row["Hparam_file"])
    proc = run_recipe(hparams, "--debug", *flags, f"--output_folder={out}",
                      script=REPO / row["Script_file"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = re.fullmatch(r"file_exists=\[(.*)\]", row["test_debug_checks"]).group(1).split(",")
    missing = [name for name in expected if not (out / name).exists()]
    assert not missing
