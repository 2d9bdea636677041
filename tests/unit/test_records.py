"""Result records (s3brain.compare.records): a comparison made from its records equals the one
made from its runs; the Pareto front and the budget query (s3brain.compare.pareto)."""

import csv
import json
import random
import shutil

import pytest
from speechbrain.utils.metric_stats import ErrorRateStats

from s3brain.compare.cli import main as compare_main
from s3brain.compare.pareto import budget_report, pareto_front, plot_pareto, within_budget
from s3brain.compare.records import (
    ERRORS_FILE,
    read_errors,
    record_comparison,
    run_errors,
    write_record,
)
from s3brain.compare.stats import error_files, prediction_errors, utterance_errors

WORDS = "the cat sat on the mat by the door".split()


def _write_run(run, seed, name, wrong_rate):
    """A finished run: per-utterance WER files (greedy and LM) and its results.json."""
    rng = random.Random(f"{seed}-{name}")
    refs = {f"spk-{i:03d}": WORDS[: 3 + i % 6] for i in range(40)}
    hyps = {k: [w if rng.random() > wrong_rate else "x" for w in r] for k, r in refs.items()}
    run.mkdir(parents=True)
    results = {"strategy": name, "primary_metric": "wer_test_clean",
               "ssl_hub": str(run.parent / "backbone"), "flops_10s": 3e9,
               "storage_bytes_per_task": 1e6 if name == "weight_ft" else 1e4}
    for tag in ("", "lm_"):
        stats = ErrorRateStats()
        stats.append(list(refs), list(hyps.values()), list(refs.values()))
        for split in ("test-clean", "test-other"):
            with open(run / f"wer_{tag}{split}.txt", "w") as f:
                stats.write_stats(f)
            key = f"wer_{split.replace('-', '_')}" + ("_lm" if tag else "")
            results[key] = stats.summarize("error_rate")
    (run / "results.json").write_text(json.dumps(results))


def test_a_comparison_from_its_records_equals_the_one_from_its_runs(tmp_path):
    recipe, out = tmp_path / "recipe", tmp_path / "runs"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text("raise SystemExit('nothing may run')\n")
    for name in ("weight_ft", "masks"):
        (recipe / "hparams" / f"{name}.yaml").write_text(f"strategy: {name}\n")
        for seed in (1, 2, 3):
            _write_run(out / f"seed{seed}" / name, seed, name, 0.3 if name == "masks" else 0.5)
    seeds = ["--seeds", "1", "2", "3"]
    assert compare_main([str(recipe), "--all", "--out", str(out), *seeds,
                         "--record", str(tmp_path / "records")]) == 0
    from_runs = (out / "comparison.csv").read_text()
    wer_bytes = sum(p.stat().st_size for p in out.rglob("wer_*.txt"))
    shutil.rmtree(out)  # the runs are gone; only the records are left
    records = tmp_path / "records"
    assert sorted(p.name for p in (records / "seed2" / "masks").iterdir()) == [
        "results.json", ERRORS_FILE]
    recorded = sum(p.stat().st_size for p in records.rglob("*") if p.is_file())
    assert recorded * 10 < wer_bytes  # compact: a tenth of the alignment files or less
    assert compare_main([str(recipe), "--all", "--out", str(tmp_path / "again"), *seeds,
                         "--from-records", str(records)]) == 0
    again = (tmp_path / "again" / "comparison.csv").read_text()
    assert again == from_runs
    with open(tmp_path / "again" / "comparison.csv") as f:
        row = {r["name"]: r for r in csv.DictReader(f)}["masks"]
    assert row["d_wer_test_clean"].endswith("*") and row["s_wer_lm_test_other"]
    # a row whose record is missing says so instead of a figure
    shutil.rmtree(records / "seed3" / "masks")
    assert compare_main([str(recipe), "--all", "--out", str(tmp_path / "third"), *seeds,
                         "--from-records", str(records)]) == 1


def test_a_record_holds_every_utterance_of_every_file_and_no_machine_path(tmp_path):
    run = tmp_path / "run"
    _write_run(run, 1, "weight_ft", 0.4)
    with open(run / "predictions_test.csv", "w") as f:
        f.write("ID,intent_predicted,intent_true\na,x,x\nb,x,y\n")
    write_record(run, tmp_path / "rec", repo=tmp_path)
    assert read_errors(tmp_path / "rec") == run_errors(run)
    for split, path in error_files(run, "wer_test_clean", lm=True).items():
        assert utterance_errors(tmp_path / "rec" / path.name) == utterance_errors(path), split
    assert error_files(tmp_path / "rec", "wer_test_clean", lm=True).keys() == \
        error_files(run, "wer_test_clean", lm=True).keys()
    assert prediction_errors(tmp_path / "rec" / "predictions_test.csv") == {
        "a": (0, 1), "b": (1, 1)}
    results = json.loads((tmp_path / "rec" / "results.json").read_text())
    assert results["ssl_hub"] == "backbone"  # relative to the repository given
    # the same run recorded again gives the same bytes (gzip without a time stamp)
    first = (tmp_path / "rec" / ERRORS_FILE).read_bytes()
    write_record(run, tmp_path / "rec", repo=tmp_path)
    assert (tmp_path / "rec" / ERRORS_FILE).read_bytes() == first
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        write_record(tmp_path / "nothing", tmp_path / "rec2")


def test_record_comparison_leaves_checkpoints_out(tmp_path):
    _write_run(tmp_path / "cmp" / "seed1" / "weight_ft", 1, "weight_ft", 0.5)
    ckpt = tmp_path / "cmp" / "seed1" / "weight_ft" / "save" / "CKPT+1"
    ckpt.mkdir(parents=True)
    (ckpt / "results.json").write_text("{}")
    (ckpt / "model.ckpt").write_bytes(b"0" * 1000)
    written = record_comparison(tmp_path / "cmp", tmp_path / "rec")
    assert written == [tmp_path / "rec" / "seed1" / "weight_ft"]
    assert not list((tmp_path / "rec").rglob("*.ckpt"))


ROWS = [{"name": "dense", "wer_test_clean": 50.0, "flops_10s": 3e9, "latency_ms_10s": 200,
         "storage_bytes_per_task": 8e6},
        {"name": "masks", "wer_test_clean": 52.0, "flops_10s": 3e9, "latency_ms_10s": 200,
         "storage_bytes_per_task": 4e5},
        {"name": "pruned", "wer_test_clean": 55.0, "flops_10s": 1e9, "latency_ms_10s": 90,
         "storage_bytes_per_task": 8e6},
        {"name": "worse", "wer_test_clean": 60.0, "flops_10s": 2e9, "latency_ms_10s": 150,
         "storage_bytes_per_task": 8e6},
        {"name": "failed", "wer_test_clean": None, "flops_10s": None}]


def test_the_pareto_front_is_every_row_no_other_beats_in_both():
    assert [r["name"] for r in pareto_front(ROWS, "flops_10s", "wer_test_clean")] == [
        "pruned", "dense"]
    assert [r["name"] for r in pareto_front(ROWS, "storage_bytes_per_task",
                                            "wer_test_clean")] == ["masks", "dense"]
    # brute force: a front row is beaten by none, a row off the front by at least one
    for cost in ("flops_10s", "latency_ms_10s", "storage_bytes_per_task"):
        front = pareto_front(ROWS, cost, "wer_test_clean")
        done = [r for r in ROWS if r.get(cost) is not None]
        for r in done:
            beaten = any(o[cost] <= r[cost] and o["wer_test_clean"] <= r["wer_test_clean"]
                         and (o[cost], o["wer_test_clean"]) != (r[cost], r["wer_test_clean"])
                         for o in done)
            assert (r in front) != beaten, (cost, r["name"])
    # for an accuracy, higher is better
    accuracy = [{"name": "a", "acc": 90, "c": 2}, {"name": "b", "acc": 80, "c": 1},
                {"name": "c", "acc": 70, "c": 3}]
    assert [r["name"] for r in pareto_front(accuracy, "c", "acc", True)] == ["b", "a"]


def test_the_budget_query_keeps_the_rows_within_every_limit_best_first(tmp_path):
    fits = within_budget(ROWS, {"latency_ms_10s": 200, "storage_bytes_per_task": 1e6},
                         "wer_test_clean")
    assert [r["name"] for r in fits] == ["masks"]
    assert [r["name"] for r in within_budget(ROWS, {"flops_10s": 2e9}, "wer_test_clean")] == [
        "pruned", "worse"]
    text, fits = budget_report(ROWS, {"latency_ms_10s": 100}, "wer_test_clean")
    assert text.splitlines()[0].startswith("1 of 5 rows within latency_ms_10s <= 100")
    assert "pruned" in text and "dense" not in text
    png = plot_pareto(ROWS, tmp_path / "p.png", "wer_test_clean")
    assert png.read_bytes()[:4] == b"\x89PNG"
