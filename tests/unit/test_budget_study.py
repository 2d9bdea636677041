"""The budget pruning study's table, intervals and the ladder's accuracy column are made from its
records (studies/budget_pruning): a changed record moves exactly the figures it feeds."""

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "studies" / "budget_pruning"))

import budget_pruning as study  # noqa: E402

TARGET = study.spec()["targets"][1]
NAME = study.spec()["strategy"]


@pytest.fixture(scope="module")
def pooled():
    return study.rows()


def by_target(rows):
    return {r["target"]: r for r in rows}


def test_every_target_has_three_seeds_and_its_interval_against_the_reference(pooled):
    seeds = len(study.spec()["seeds"])
    assert [r["target"] for r in pooled] == [1.0, *study.spec()["targets"]]
    assert pooled[0]["name"] == study.REFERENCE
    for r in pooled[1:]:
        assert r["status"] == f"{seeds}/{seeds} seeds ok" and r["reference"] == study.REFERENCE
        # the seed interval's mean is the difference of the two means (from the per-utterance
        # errors; results.json rounds each run's WER to 0.01)
        assert r["s_wer_test_clean"]["difference"] == pytest.approx(
            r["wer_test_clean"] - pooled[0]["wer_test_clean"], abs=0.011)
        assert r["s_wer_test_clean_int8"]["difference"] == pytest.approx(
            r["wer_test_clean_int8"] - pooled[0]["wer_test_clean"], abs=1e-9)
        # the deployed backbone meets its target
        assert r["backbone_flops_ratio"] <= r["target"] + 1e-4


def test_a_changed_record_moves_the_figures_it_feeds(tmp_path, pooled):
    records = tmp_path / "records"
    shutil.copytree(study.STUDY / "records", records)
    seed = study.spec()["seeds"][1]
    path = records / study.target_name(TARGET) / f"seed{seed}" / NAME / "results.json"
    results = json.loads(path.read_text())
    results["wer_test_clean_int8"] += 3.0
    path.write_text(json.dumps(results))
    before, after = by_target(pooled), by_target(study.rows(records))
    assert after[TARGET]["wer_test_clean_int8"] - before[TARGET]["wer_test_clean_int8"] == \
        pytest.approx(1.0)  # a third of 3 points, three seeds
    assert after[TARGET]["s_wer_test_clean_int8"]["difference"] - \
        before[TARGET]["s_wer_test_clean_int8"]["difference"] == pytest.approx(1.0)
    assert after[TARGET]["wer_test_clean"] == before[TARGET]["wer_test_clean"]
    cells_before = study.ladder_accuracy(pooled)
    cells_after = study.ladder_accuracy(study.rows(records))
    rung = f"budget {TARGET:g} int8"
    assert cells_after[rung] != cells_before[rung]
    assert f"{after[TARGET]['wer_test_clean_int8']:.2f}" in cells_after[rung]
    assert {k for k in cells_before if cells_before[k] != cells_after[k]} == {rung}


def test_the_table_shows_each_rows_figures(pooled):
    table = study.table(pooled)
    lines = table.splitlines()[2:]
    assert len(lines) == len(pooled)
    for line, r in zip(lines, pooled):
        assert f"{r['wer_test_clean']:.2f} ± {r['wer_test_clean_std']:.2f}" in line
        assert f"{r['wer_test_clean_lm']:.2f}" in line
