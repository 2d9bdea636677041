"""The studies' sweeps (``studies/s3router_sweep/s3router_sweep.py``,
``studies/superb_table/superb_table.py``) on finished runs written by the test in the recipes'
formats (``results.json``, SpeechBrain's ``wer_<split>.txt``, ``predictions_test.csv``): seeds
pooled into mean +- std and paired bootstrap intervals, the score-learning-rate x init grid, and,
without ``--seeds``, the folders and tables of a single-seed sweep exactly as before."""

import csv
import importlib.util
import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest

from s3brain.compare.stats import paired_bootstrap, prediction_errors, utterance_errors

REPO = Path(__file__).resolve().parents[2]
WORDS = 9  # words of every test sentence
REFS = {f"u{i:02d}": "the cat sat on the mat by the door" for i in range(30)}


def load(name):
    """A study's script (``studies/<name>/<name>.py``) as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "studies" / name / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sweep = load("s3router_sweep")


def wer_run(folder, wrong, **results):
    """A finished LibriSpeech run: ``wrong[ID]`` words wrong in utterance ``ID`` (the same on
    test-clean and test-other), its ``wer_*.txt`` as ``ErrorRateStats.write_stats`` writes them
    and its ``results.json``; returns the WER."""
    from speechbrain.utils.metric_stats import ErrorRateStats

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stats = ErrorRateStats()
    stats.append(list(REFS), [["x"] * wrong[k] + r.split()[wrong[k]:] for k, r in REFS.items()],
                 [r.split() for r in REFS.values()])
    for split in ("test-clean", "test-other"):
        with open(folder / f"wer_{split}.txt", "w") as f:
            stats.write_stats(f)
    wer = round(stats.summarize("error_rate"), 2)
    full = {"strategy": "weight_ft", "primary_metric": "wer_test_clean", "sparsity": 0.0,
            "sparsity_linear": 0.0, "wer_test_clean": wer, "wer_test_other": wer,
            "wer_test_clean_lm": round(wer / 2, 2), "wer_test_other_lm": round(wer / 2, 2),
            "cer_test_clean": round(wer / 3, 2), "params_trainable": 1000,
            "params_total": 2000000, "flops_10s": 3.5e9, "latency_ms_10s": 120.0,
            "storage_bytes_per_task": 8254068, "train_seconds": 60.0, **results}
    (folder / "results.json").write_text(json.dumps(full))
    return wer


def every(n):
    return {k: n for k in REFS}


def single_seed_sweep(out):
    """The folders of a sweep run without --seeds (the layout before seeds existed)."""
    root = out / "train-10m"
    wer_run(root / "weight_ft", every(3))
    for folder, wrong, sparsity in (("s3router_ori_0.1", 4, 0.1), ("s3router_ri_0.1", 5, 0.1),
                                    ("s3router_ori_0.2", 6, 0.2)):
        wer_run(root / folder, every(wrong), strategy="s3router", sparsity=sparsity,
                storage_bytes_per_task=70000)
    wer_run(root / "omp_0.5", every(2), strategy="omp", sparsity=0.5)


LABELS = [f"u{i:02d}" for i in range(40)]


def superb_run(folder, wrong, dev, **results):
    """A finished SUPERB keyword-spotting run: ``predictions_test.csv`` (as
    ``ClassificationStats.write_predictions`` writes it) wrong on the utterances in ``wrong``,
    its ``results.json``, and its best checkpoint with ``dev`` as dev accuracy (the sweep chooses
    the sparsity on it); returns the test accuracy."""
    import speechbrain as sb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "predictions_test.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["ID", "label_predicted", "label_true"])
        for uid in LABELS:
            writer.writerow([uid, "no" if uid in wrong else "yes", "yes"])
    accuracy = 100.0 * (len(LABELS) - len(wrong)) / len(LABELS)
    full = {"strategy": "weight_ft", "primary_metric": "accuracy_test",
            "accuracy_test": accuracy, "sparsity": 0.0, "storage_bytes_per_task": 8000000,
            "storage_share_of_backbone": 1.0, **results}
    (folder / "results.json").write_text(json.dumps(full))
    sb.utils.checkpoints.Checkpointer(folder / "save").save_checkpoint(
        meta={"error": 100.0 - dev, "dev_accuracy": dev})
    return accuracy


def superb_sweep(out, seeds):
    """KS runs: weight fine-tuning wrong on 8 + seed-th utterances; S3-Router at 0.05 right on
    every utterance but worse on dev, at 0.1 best on dev and wrong on 10 (0.1 is chosen: the test
    does not choose); the yamls' seed in the plain folders, the others in seed<S>/."""
    accuracies = {}
    for index, seed in enumerate(seeds):
        root = out / "KS" if seed == 1986 else out / "KS" / f"seed{seed}"
        accuracies.setdefault("weight_ft", []).append(
            superb_run(root / "weight_ft", set(LABELS[:8 + index]), 80.0))
        accuracies.setdefault("0.05", []).append(superb_run(
            root / "s3router_0.05", set(), 70.0, strategy="s3router", sparsity=0.05,
            storage_bytes_per_task=9000, storage_share_of_backbone=0.0011))
        accuracies.setdefault("0.1", []).append(superb_run(
            root / "s3router_0.1", set(LABELS[-10:]), 90.0, strategy="s3router", sparsity=0.1,
            storage_bytes_per_task=9000, storage_share_of_backbone=0.0011))
    return accuracies


def sweep_args(out, *argv):
    """The sweep's parsed options, for ``jobs_for``."""
    return sweep.parse_args(["--out", str(out), *argv])


# ---------------------------------------------------------------- the S3-Router sweep


SWEEP_MD = """\
| split | strategy | init | sparsity | wer_test_clean | wer_test_other | wer_test_clean_lm | wer_test_other_lm | storage_bytes_per_task |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| train-10m | weight_ft |  | 0.0 | 33.33 | 33.33 | 16.66 | 16.66 | 8.25 M |
| train-10m | omp |  | 0.5 | 22.22 | 22.22 | 11.11 | 11.11 | 8.25 M |
| train-10m | s3router | ori | 0.1 | 44.44 | 44.44 | 22.22 | 22.22 | 70.00 k |
| train-10m | s3router | ori | 0.2 | 66.67 | 66.67 | 33.34 | 33.34 | 70.00 k |
| train-10m | s3router | ri | 0.1 | 55.56 | 55.56 | 27.78 | 27.78 | 70.00 k |
"""
SWEEP_CSV_HEADER = ("split,strategy,init,sparsity,sparsity_linear,wer_test_clean,wer_test_other,"
                    "wer_test_clean_lm,wer_test_other_lm,cer_test_clean,params_trainable,"
                    "params_total,flops_10s,latency_ms_10s,storage_bytes_per_task,train_seconds")
SWEEP_PIVOT = """\
**train-10m** (WER test-clean / test-other; greedy, then 4-gram LM)

Weight fine-tuning: 33.33 / 33.33, LM 16.66 / 16.66

| | sparsity 0.1 | sparsity 0.2 |
|---|---|---|
| S3-Router ORI | 44.44 / 44.44<br>LM 22.22 / 22.22 | 66.67 / 66.67<br>LM 33.34 / 33.34 |
| S3-Router RI | 55.56 / 55.56<br>LM 27.78 / 27.78 |  |

"""


def test_without_seeds_the_sweep_tables_are_those_of_before(tmp_path):
    """A sweep's finished single-seed runs give the tables the sweep wrote before seeds and
    axes existed (written by that version on the same runs), and no pooled tables."""
    single_seed_sweep(tmp_path)
    sweep.main(["--out", str(tmp_path), "--inits", "ori", "ri", "--sparsities", "0.1", "0.2",
                "--report-only"])
    assert (tmp_path / "sweep.md").read_text() == SWEEP_MD
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert lines[0] == SWEEP_CSV_HEADER and len(lines) == 6
    assert lines[1] == ("train-10m,weight_ft,,0.0,0.0,33.33,33.33,16.66,16.66,11.11,1000,2000000,"
                        "3500000000.0,120.0,8254068,60.0")
    assert (tmp_path / "sweep_pivot.md").read_text() == SWEEP_PIVOT
    assert not (tmp_path / "sweep_seeds.md").exists() and not (tmp_path / "score_lr.md").exists()


def test_without_seeds_the_jobs_are_those_of_before(tmp_path):
    """Folders and overrides of a sweep without --seeds, --score-lrs or --prune-intervals: the
    runs made before are found again (the pruning ones start from the split's weight_ft)."""
    args = sweep_args(tmp_path, "--splits", "train-10m", "--inits", "ori", "wmi",
                      "--sparsities", "0.1", "--pruning", "--structured",
                      "--structured-sparsities", "0.3", "--set", "train-10m:number_of_epochs=6")
    jobs = sweep.jobs_for(args)
    root = tmp_path / "train-10m"
    base = {"train_splits": "[train-10m]", "number_of_epochs": "6"}
    assert [(j.folder, j.yaml) for j in jobs] == [
        (root / "weight_ft", "weight_ft.yaml"),
        (root / "s3router_ori_0.1", "s3router.yaml"), (root / "s3router_wmi_0.1", "s3router.yaml"),
        *((root / f"{m}_0.5", f"{m}.yaml") for m in ("s3router_p", "omp", "imp", "parp")),
        *((root / f"{m}_0.3", f"{m}.yaml") for m in ("safari", "omp_structured",
                                                    "parp_structured"))]
    assert jobs[0].overrides == base
    assert jobs[1].overrides == {**base, "mask_init": "ori", "sparsity": "0.1"}
    assert jobs[-1].overrides == {**base, "sparsity": "0.3", "init_from": root / "weight_ft"}
    assert all(j.seed is None and j.cell == j.folder.name for j in jobs)


def test_score_lr_and_prune_interval_grid_per_seed(tmp_path):
    """--score-lrs x --inits at --score-lr-sparsity, per seed: the yaml's own rate (0.01) is the
    plain run, the others set lr_ssl in their own folder; --prune-intervals sets PARP's
    prune_interval_steps (the yaml's 50 is the plain run); each seed but the yamls' (1986) in its
    own folder, its pruning runs starting from that seed's weight_ft."""
    args = sweep_args(tmp_path, "--splits", "train-10m", "--inits", "ori", "ri", "wmi",
                      "--sparsities", "0.05", "0.1", "--score-lrs", "5e-5", "1e-4", "1e-3",
                      "1e-2", "--pruning", "--prune-intervals", "1", "50",
                      "--seeds", "1986", "1987")
    jobs = sweep.jobs_for(args)
    by_folder = {j.folder.relative_to(tmp_path).as_posix(): j for j in jobs}
    # per seed: weight_ft, 3 inits x 2 sparsities, 3 inits x 3 new rates, 4 pruning + 1 interval
    assert len(jobs) == len(by_folder) == 2 * (1 + 6 + 9 + 5)
    for seed, root in (("1986", "train-10m"), ("1987", "train-10m/seed1987")):
        base = {"train_splits": "[train-10m]", "seed": seed}
        assert by_folder[f"{root}/weight_ft"].overrides == base
        assert by_folder[f"{root}/s3router_wmi_0.1"].overrides == {
            **base, "mask_init": "wmi", "sparsity": "0.1"}
        for lr in ("5e-5", "1e-4", "1e-3"):
            for init in ("ori", "ri", "wmi"):
                job = by_folder[f"{root}/s3router_{init}_0.1_lr{lr}"]
                assert job.overrides == {**base, "mask_init": init, "sparsity": "0.1",
                                         "lr_ssl": lr}
                assert job.seed == seed and sweep.describe(job.cell) == (init, lr, None)
        assert not any("_lr" in f and "0.05" in f for f in by_folder)  # the rates at 0.1 only
        assert not any(f.endswith("_lr1e-2") for f in by_folder)  # 1e-2 is the yaml's own
        parp = by_folder[f"{root}/parp_0.5_pi1"]
        assert parp.overrides == {**base, "sparsity": "0.5", "prune_interval_steps": "1",
                                  "init_from": tmp_path / root / "weight_ft"}
        assert "prune_interval_steps" not in by_folder[f"{root}/parp_0.5"].overrides
        assert f"{root}/omp_0.5" in by_folder and f"{root}/omp_0.5_pi1" not in by_folder
    assert sweep.yaml_default("s3router.yaml", "lr_ssl") == "0.01"
    assert sweep.yaml_default("parp.yaml", "prune_interval_steps") == "50"


STAND_IN = """\
import json, pathlib, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[2:])
out = pathlib.Path(args['output_folder'])
wrong = {'weight_ft.yaml': 2, 's3router.yaml': 4}[pathlib.Path(sys.argv[1]).name]
wrong += int(args.get('seed', 1986)) - 1986 + (args.get('lr_ssl') == '1e-3')
for split in ('test-clean', 'test-other'):
    (out / f'wer_{split}.txt').write_text(''.join(
        f'u{i}, %WER 0.00 [ {wrong} / 9, 0 ins, 0 del, {wrong} sub ]\\n' for i in range(20)))
wer = round(100 * wrong / 9, 2)
(out / 'results.json').write_text(json.dumps({
    'strategy': pathlib.Path(sys.argv[1]).stem, 'sparsity': float(args.get('sparsity', 0)),
    'wer_test_clean': wer, 'wer_test_other': wer, 'args': args}))
"""


def test_the_sweep_runs_every_seed_through_submitit(tmp_path, monkeypatch):
    """A stand-in recipe (writes what a finished run writes, its WER from its overrides) run by
    the sweep through submitit's local executor: each seed's runs get ``--seed``, the yamls'
    seed the plain folders, the score learning rate ``--lr_ssl``; finished runs are reused."""
    recipe = tmp_path / "recipe"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text(STAND_IN)
    for yaml in ("weight_ft", "s3router"):
        (recipe / "hparams" / f"{yaml}.yaml").write_text(f"seed: 1986\nlr_ssl: 0.01\n")
    monkeypatch.setattr(sweep, "RECIPE", recipe)
    out = tmp_path / "sweep"
    argv = ["--out", str(out), "--inits", "ori", "--sparsities", "0.1", "--score-lrs", "1e-3",
            "--seeds", "1986", "1987", "--executor", "local", "--jobs", "3"]
    sweep.main(argv)
    runs = {p.parent.relative_to(out).as_posix(): json.loads(p.read_text())["args"]
            for p in out.glob("**/results.json")}
    assert sorted(runs) == sorted(f"train-10m/{seed}{cell}" for seed in ("", "seed1987/")
                                  for cell in ("weight_ft", "s3router_ori_0.1",
                                               "s3router_ori_0.1_lr1e-3"))
    assert runs["train-10m/seed1987/s3router_ori_0.1_lr1e-3"]["seed"] == "1987"
    assert runs["train-10m/seed1987/s3router_ori_0.1_lr1e-3"]["lr_ssl"] == "1e-3"
    assert "lr_ssl" not in runs["train-10m/s3router_ori_0.1"]
    assert any((out / "submitit").iterdir())
    with open(out / "sweep_seeds.csv") as f:
        table = {r["score_lr"] or "0.01": r for r in csv.DictReader(f) if r["init"] == "ori"}
    # seeds 1986 and 1987: 4 and 5 words wrong of 9 (one more at 1e-3); weight_ft 2 and 3
    assert float(table["0.01"]["wer_test_clean"]) == pytest.approx((44.44 + 55.56) / 2)
    assert table["1e-3"]["d_wer_test_clean"] == "+33.33 [+33.33, +33.33] *"
    stamp = (out / "train-10m" / "weight_ft" / "results.json").stat().st_mtime_ns
    sweep.main(argv)  # everything finished: reused, not rerun
    assert (out / "train-10m" / "weight_ft" / "results.json").stat().st_mtime_ns == stamp


def seeded_sweep(out):
    """Three seeds of weight fine-tuning, S3-Router ORI (two more words wrong in every
    utterance: its interval excludes 0) and RI (one word more or less, alternately: the same
    WER, an interval around 0); the yamls' seed in the plain folders. Returns the WERs."""
    wers = {}
    for seed in (1986, 1987, 1988):
        root = out / "train-10m" if seed == 1986 else out / "train-10m" / f"seed{seed}"
        dense = 3 + seed % 2
        wers.setdefault("weight_ft", []).append(wer_run(root / "weight_ft", every(dense)))
        wers.setdefault("ori", []).append(wer_run(
            root / "s3router_ori_0.1", every(dense + 2), strategy="s3router", sparsity=0.1))
        wers.setdefault("ri", []).append(wer_run(
            root / "s3router_ri_0.1", {k: dense + (1 if i % 2 else -1) for i, k in enumerate(REFS)},
            strategy="s3router", sparsity=0.1))
    return wers


def test_seeds_pool_mean_std_and_mark_the_intervals_excluding_zero(tmp_path):
    wers = seeded_sweep(tmp_path)
    sweep.main(["--out", str(tmp_path), "--inits", "ori", "ri", "--sparsities", "0.1",
                "--seeds", "1986", "1987", "1988", "--report-only"])
    with open(tmp_path / "sweep_seeds.csv") as f:
        table = {(r["strategy"], r["init"]): r for r in csv.DictReader(f)}
    assert len(table) == 3
    for key, name in ((("weight_ft", ""), "weight_ft"), (("s3router", "ori"), "ori"),
                      (("s3router", "ri"), "ri")):
        row = table[key]
        assert row["status"] == "3/3 seeds ok"
        assert float(row["wer_test_clean"]) == pytest.approx(statistics.fmean(wers[name]))
        assert float(row["wer_test_clean_std"]) == pytest.approx(statistics.stdev(wers[name]))
    assert table["weight_ft", ""]["d_wer_test_clean"] == ""
    # the same words per utterance in every seed: the pooled difference is that of the means
    ori = table["s3router", "ori"]["d_wer_test_clean"]
    expected = statistics.fmean(wers["ori"]) - statistics.fmean(wers["weight_ft"])
    assert float(ori.split(" [")[0]) == pytest.approx(expected, abs=0.02)  # WERs are rounded
    assert ori == f"{200 / WORDS:+.2f} [{200 / WORDS:+.2f}, {200 / WORDS:+.2f}] *"  # 2 of 9 words
    ri = table["s3router", "ri"]["d_wer_test_other"]
    assert ri.startswith("+0.00 [-") and not ri.endswith("*")
    # the pooled interval is stats' paired bootstrap over the utterances of the three seeds
    folders = [tmp_path / "train-10m"] + [tmp_path / "train-10m" / f"seed{s}" for s in (1987, 1988)]
    direct = paired_bootstrap(
        [utterance_errors(f / "weight_ft" / "wer_test-clean.txt") for f in folders],
        [utterance_errors(f / "s3router_ori_0.1" / "wer_test-clean.txt") for f in folders])
    assert direct["utterances"] == 90
    assert ori == f"{direct['difference']:+.2f} [{direct['low']:+.2f}, {direct['high']:+.2f}] *"
    md = (tmp_path / "sweep_seeds.md").read_text()
    assert "±" in md and "d_wer_test_clean" in md and "] * |" in md
    assert (tmp_path / "sweep_seeds.png").read_bytes()[:4] == b"\x89PNG"
    # the plain tables are those of the yamls' seed alone
    plain = (tmp_path / "sweep.md").read_text()
    assert f"| {wers['weight_ft'][0]} |" in plain and "±" not in plain


def test_missing_seeds_are_counted_and_left_out_of_the_interval(tmp_path):
    wers = seeded_sweep(tmp_path)
    (tmp_path / "train-10m" / "seed1988" / "s3router_ori_0.1" / "results.json").unlink()
    rows = sweep.pooled(sweep.jobs_for(sweep_args(
        tmp_path, "--inits", "ori", "--sparsities", "0.1", "--seeds", "1986", "1987", "1988")),
        tmp_path, ["1986", "1987", "1988"])
    ori = next(r for r in rows if r["init"] == "ori")
    assert ori["status"] == "2/3 seeds ok"
    assert ori["wer_test_clean"] == pytest.approx(statistics.fmean(wers["ori"][:2]))
    assert ori["d_wer_test_clean"]["utterances"] == 60


def test_score_lr_report_says_where_the_inits_intervals_overlap(tmp_path):
    """At the yaml's rate ORI and RI are equally worse than weight fine-tuning (their intervals
    overlap); at 1e-3 ORI matches weight fine-tuning and RI is far worse (they do not overlap,
    and RI - ORI excludes 0); the best rate is 1e-3 for ORI and 0.01 for RI."""
    root = tmp_path / "train-10m"
    wer_run(root / "weight_ft", every(3))
    alternate = {k: 3 + (1 if i % 2 else -1) for i, k in enumerate(REFS)}
    for folder, wrong in (("s3router_ori_0.1", every(5)), ("s3router_ri_0.1", every(5)),
                          ("s3router_ori_0.1_lr1e-3", alternate),
                          ("s3router_ri_0.1_lr1e-3", every(7))):
        wer_run(root / folder, wrong, strategy="s3router", sparsity=0.1)
    sweep.main(["--out", str(tmp_path), "--inits", "ori", "ri", "--sparsities", "0.1",
                "--score-lrs", "1e-3", "1e-2", "--report-only"])
    text = (tmp_path / "score_lr.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| train-10m")]
    assert [line.split(" | ")[1:3] for line in rows] == [["1e-3", "ori"], ["1e-3", "ri"],
                                                         ["0.01", "ori"], ["0.01", "ri"]]
    findings = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("- ")}
    assert "do not overlap" in findings["- score lr 1e-3"]
    assert "RI - ORI +44.44 [" in findings["- score lr 1e-3"]
    assert findings["- score lr 1e-3"].endswith("*")
    assert " overlap (" in findings["- score lr 0.01"]
    assert "RI - ORI +0.00 [+0.00, +0.00]" in findings["- score lr 0.01"]
    assert "score lr 1e-3" in findings["- ORI"] and "score lr 0.01" in findings["- RI"]
    # each init's best rate against its other rates: ORI 3 of 9 words wrong against 5
    assert "paired: lr 1e-3 - lr 0.01 -22.22 [" in findings["- ORI"]
    assert findings["- ORI"].endswith("] *")  # every utterance 1 to 3 words better
    assert "paired: lr 0.01 - lr 1e-3 -22.22 [" in findings["- RI"]
    assert "±" not in text and "(over seeds" not in text  # one seed: no spread, no t interval
    assert (tmp_path / "score_lr.png").read_bytes()[:4] == b"\x89PNG"
    # the plain sweep table gains the axis column, the pivot keeps the yaml's rate only
    assert "| score_lr |" in (tmp_path / "sweep.md").read_text()
    assert "44.44 / 44.44" not in (tmp_path / "sweep_pivot.md").read_text()



def test_score_lr_findings_with_seeds_give_the_interval_over_seeds_too(tmp_path):
    """RI has 1, 2 and 4 more words wrong than ORI per utterance on the three seeds: by
    utterances its difference to ORI (and the two inits' intervals against weight fine-tuning)
    are tight and apart; over seeds the same differences vary, and the t interval (scipy's t,
    computed here from the per-seed WERs) is wide enough that the inits' intervals overlap."""
    from scipy import stats

    extra = {1986: 1, 1987: 2, 1988: 4}
    wer = {}
    for seed in extra:
        root = tmp_path / "train-10m" / ("" if seed == 1986 else f"seed{seed}")
        wer_run(root / "weight_ft", every(3))
        for init, wrong in (("ori", 4), ("ri", 4 + extra[seed])):
            wer[init, seed] = wer_run(root / f"s3router_{init}_0.1", every(wrong),
                                      strategy="s3router", sparsity=0.1)
    sweep.main(["--out", str(tmp_path), "--inits", "ori", "ri", "--sparsities", "0.1",
                "--score-lrs", "1e-2", "--seeds", "1986", "1987", "1988", "--report-only"])
    line = next(x for x in (tmp_path / "score_lr.md").read_text().splitlines()
                if x.startswith("- score lr 0.01"))
    diffs = [100 * extra[s] / WORDS for s in extra]  # the files' error rates, not rounded
    assert [wer["ri", s] - wer["ori", s] for s in extra] == pytest.approx(diffs, abs=0.02)
    mean, half = statistics.fmean(diffs), stats.t.ppf(0.975, 2) * statistics.stdev(diffs) / 3 ** .5
    assert f"RI - ORI {mean:+.2f} [" in line  # by utterances: a tight interval, excludes 0
    assert f"(over seeds {mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}])" in line
    assert "do not overlap (ORI" in line and "over seeds overlap (ORI" in line


# ---------------------------------------------------------------- the SUPERB table

SUPERB_MD = (
    "| | Keyword spotting |\n|---|---|\n| Metric | Acc % |\n| Weight fine-tuning | 80.00 |\n"
    "| S3-Router | 75.00 |\n| Best sparsity | 0.1 |\n| Storage per task (S3-Router) | "
    "9,000 B (0.1%) |\n\nS3-Router test accuracy at each sparsity (the best is chosen on dev):\n"
    "\n| task | sparsity 0.05 | sparsity 0.1 |\n|---|---|---|\n| KS | 100.00 | 75.00 |\n")


def test_superb_seeds_give_accuracy_mean_std_and_a_paired_interval(tmp_path):
    superb = load("superb_table")
    accuracies = superb_sweep(tmp_path, [1986, 1987])
    superb.main(["--out", str(tmp_path), "--tasks", "KS", "--sparsities", "0.05", "0.1",
                 "--seeds", "1986", "1987", "--report-only", "--no-bank"])
    # the table of the yamls' seed is the one written before seeds existed
    assert (tmp_path / "superb_table.md").read_text() == SUPERB_MD
    text = (tmp_path / "superb_table_seeds.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Keyword spotting"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    dense, chosen = accuracies["weight_ft"], accuracies["0.1"]
    assert cells[2] == f"{statistics.fmean(dense):.2f} ± {statistics.stdev(dense):.2f}"
    assert cells[3] == "75.00 ± 0.00" and cells[4] == "0.1"  # best mean dev, not best test
    # 80 utterances: weight fine-tuning wrong on 8 + 9, S3-Router on 10 + 10
    delta = statistics.fmean(chosen) - statistics.fmean(dense)
    assert cells[5].startswith(f"{delta:+.2f} [") and not cells[5].endswith("*")
    # over the two seeds: the t interval (1 degree of freedom) of the two differences
    from scipy import stats as scipy_stats

    diffs = [c - d for c, d in zip(chosen, dense)]
    half = scipy_stats.t.ppf(0.975, 1) * statistics.stdev(diffs) / 2 ** 0.5
    assert cells[6] == (f"{delta:+.2f} [{delta - half:+.2f}, {delta + half:+.2f}]"
                        + (" *" if delta + half < 0 or delta - half > 0 else ""))
    sweep_row = next(line for line in text.splitlines() if line.startswith("| KS |"))
    perfect = statistics.fmean(accuracies["0.05"]) - statistics.fmean(dense)
    assert f"100.00 ± 0.00<br>Δ {perfect:+.2f} [" in sweep_row
    assert sweep_row.split(" | ")[1].endswith("*")  # right everywhere: excludes 0


def test_superb_seed_missing_for_one_run_is_counted(tmp_path):
    superb = load("superb_table")
    superb_sweep(tmp_path, [1986, 1987])
    (tmp_path / "KS" / "seed1987" / "weight_ft" / "results.json").unlink()
    superb.main(["--out", str(tmp_path), "--tasks", "KS", "--sparsities", "0.1",
                 "--seeds", "1986", "1987", "--report-only", "--no-bank"])
    row = next(line for line in (tmp_path / "superb_table_seeds.md").read_text().splitlines()
               if line.startswith("| Keyword spotting"))
    assert "80.00 ± 0.00 (1/2 seeds)" in row
    # the interval pools only the seed where both runs finished: 40 utterances, -5 points; one
    # pair of runs has no interval over seeds
    assert "| -5.00 [" in row and row.endswith("|  |")


def test_superb_jobs_per_seed(tmp_path):
    superb = load("superb_table")
    import argparse

    args = argparse.Namespace(out=tmp_path, tasks=["KS", "IC"], sparsities=["0.1"],
                              set=["number_of_epochs=3"], seeds=["1986", "1988"])
    jobs = superb.jobs_for(args)
    assert [(t, y, f.relative_to(tmp_path).as_posix(), o) for t, y, f, o in jobs][:4] == [
        ("KS", "weight_ft.yaml", "KS/weight_ft", {"number_of_epochs": "3", "seed": "1986"}),
        ("KS", "s3router.yaml", "KS/s3router_0.1",
         {"number_of_epochs": "3", "seed": "1986", "sparsity": "0.1"}),
        ("KS", "weight_ft.yaml", "KS/seed1988/weight_ft", {"number_of_epochs": "3",
                                                           "seed": "1988"}),
        ("KS", "s3router.yaml", "KS/seed1988/s3router_0.1",
         {"number_of_epochs": "3", "seed": "1988", "sparsity": "0.1"})]
    superb_sweep(tmp_path, [1986])  # finished runs are not run again
    left = [f.relative_to(tmp_path).as_posix() for _, _, f, _ in superb.jobs_for(args)]
    assert left[:2] == ["KS/seed1988/weight_ft", "KS/seed1988/s3router_0.1"] and len(left) == 6
    args.seeds = None
    assert [f.relative_to(tmp_path).as_posix() for _, _, f, _ in superb.jobs_for(args)] == [
        "IC/weight_ft", "IC/s3router_0.1"]
    assert all("seed" not in o for *_, o in superb.jobs_for(args))


def test_storage_sweep_passes_its_overrides_to_every_run(tmp_path, monkeypatch):
    """``per_task_storage.py --set``: a backbone named once reaches every run (LibriSpeech and
    SUPERB), beside each row's own knob."""
    storage = load("per_task_storage")
    ran = []
    monkeypatch.setattr(storage, "run", lambda job: ran.append(job) or (job[0], None, 0.0))
    monkeypatch.setattr(storage, "write_report", lambda out: None)
    monkeypatch.setattr(storage, "write_superb_report", lambda out, tasks: None)
    common = ["--out", str(tmp_path), "--lora-ranks", "2", "--adapters", "16", "--seed", "1987",
              "--set", "ssl_hub=s3brain/backbones/w2v2-tiny", "--set", "lm_weight=0.75"]
    for recipe in (["LibriSpeech"], ["SUPERB/KS"]):
        monkeypatch.setattr(sys, "argv", ["per_task_storage.py", "--recipe", *recipe, *common])
        storage.main()
    # LibriSpeech: weight_ft, S3-Router, LoRA, adapter, top blocks; KS: all but top blocks
    assert len(ran) == 5 + 4
    for name, _, _, overrides, *_ in ran:
        assert overrides["ssl_hub"] == "s3brain/backbones/w2v2-tiny", name
        assert overrides["lm_weight"] == "0.75" and overrides["seed"] == 1987, name
    assert {job[0]: job[3].get("lora_rank") for job in ran}["train-10m/lora r2"] == 2


def test_prediction_errors_count_an_utterance_wrong_when_any_target_is(tmp_path):
    """Intent classification's three targets, written by the recipes' own writer."""
    import io

    import torch
    from speechbrain.dataio.encoder import CategoricalEncoder

    from s3brain.training.utterance import ClassificationStats

    encoders = {}
    for target, labels in (("action", ["on", "off"]), ("object", ["lamp", "music"])):
        encoders[target] = CategoricalEncoder()
        encoders[target].update_from_iterable(labels)
    stats = ClassificationStats(["action", "object"], encoders=encoders)
    hot = torch.eye(2)
    stats.append({"action": hot[[0, 0, 1]], "object": hot[[0, 1, 1]]},
                 {"action": torch.tensor([0, 0, 0]), "object": torch.tensor([0, 0, 1])},
                 ids=["a", "b", "c"])
    out = io.StringIO()
    stats.write_predictions(out)
    path = tmp_path / "predictions_test.csv"
    path.write_text(out.getvalue())
    errors = prediction_errors(path)
    assert errors == {"a": (0, 1), "b": (1, 1), "c": (1, 1)}
    assert 100 * (1 - sum(e for e, _ in errors.values()) / 3) == pytest.approx(
        stats.summarize()["accuracy"])


# ---------------------------------------------------------------- backbone scaling


scaling = load("backbone_scaling")


def scaling_runs(out, unfinished=True, per_length=False):
    """Two backbones (4000 and 8000 pretraining steps), two seeds each: S3-Router has two more
    words wrong per utterance than weight fine-tuning on the 4000-step backbone and one more on
    the 8000-step one (the gap shrinks), and weight fine-tuning one word fewer on the 8000-step
    one; with ``unfinished``, seed 1987's second S3-Router run did not finish; with
    ``per_length``, each backbone from its own pretraining run."""
    wers = {}
    for step, extra, seconds in ((4000, 2, 700), (8000, 1, 1400)):
        folder = scaling.backbone_folder(out, step, per_length)
        folder.mkdir(parents=True)
        (folder / "training.json").write_text(json.dumps({"steps": step,
                                                          "train_seconds": seconds}))
        for seed in (1986, 1987):
            root = scaling.run_folder(out, step, per_length) / f"step{step}" / f"seed{seed}"
            dense = 3 + seed % 2 + (step == 4000)
            wers.setdefault((step, "weight_ft"), []).append(
                wer_run(root / "weight_ft", every(dense)))
            wers.setdefault((step, "s3router"), []).append(
                wer_run(root / "s3router", every(dense + extra), strategy="s3router",
                        sparsity=0.1))
    if unfinished:
        (scaling.run_folder(out, 8000, per_length) / "step8000" / "seed1987" / "s3router"
         / "results.json").unlink()
    return wers


def test_scaling_table_gives_both_wers_and_the_gap_per_backbone(tmp_path):
    wers = scaling_runs(tmp_path)
    text = scaling.write_report(tmp_path, [8000, 4000], [1986, 1987])
    rows = scaling.scaling_rows(tmp_path, [4000, 8000], [1986, 1987])
    assert [(r["steps"], r["pretrain_seconds"]) for r in rows] == [(4000, 700), (8000, 1400)]
    for row in rows:
        step = row["steps"]
        for name in ("weight_ft", "s3router"):
            done = wers[step, name][:1] if (step, name) == (8000, "s3router") else wers[step, name]
            assert row[f"{name}_wer_test_clean"] == pytest.approx(statistics.fmean(done))
            assert row[f"{name}_wer_test_clean_lm"] == pytest.approx(
                statistics.fmean(round(w / 2, 2) for w in done))
        seeds = (1986,) if step == 8000 else (1986, 1987)  # the pairs that finished
        direct = paired_bootstrap(
            [utterance_errors(tmp_path / f"step{step}" / f"seed{s}" / "weight_ft"
                              / "wer_test-clean.txt") for s in seeds],
            [utterance_errors(tmp_path / f"step{step}" / f"seed{s}" / "s3router"
                              / "wer_test-clean.txt") for s in seeds])
        assert row["gap_wer_test_clean"] == direct
        assert direct["utterances"] == 30 * len(seeds)
        assert row["gap_wer_test_clean_lm"] == pytest.approx(
            row["s3router_wer_test_clean_lm"] - row["weight_ft_wer_test_clean_lm"], abs=0.01)
    # two words of nine, then one: every utterance the same, so the interval is a point
    assert rows[0]["gap_wer_test_clean"]["difference"] == pytest.approx(200 / WORDS, abs=0.01)
    assert rows[1]["gap_wer_test_clean"]["difference"] == pytest.approx(100 / WORDS, abs=0.01)
    assert rows[0]["weight_ft_wer_test_clean_std"] == pytest.approx(
        statistics.stdev(wers[4000, "weight_ft"]))
    assert rows[1]["status"] == "weight_ft 2/2 seeds ok, s3router 1/2 seeds ok"
    assert rows[1]["s3router_wer_test_clean_std"] is None  # one finished seed: no spread
    with open(tmp_path / "scaling.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["steps"] for r in table] == ["4000", "8000"]
    assert table[0]["gap_wer_test_clean"] == f"{200 / WORDS:+.2f} [{200 / WORDS:+.2f}, " \
                                             f"{200 / WORDS:+.2f}] *"
    assert float(table[1]["s3router_wer_test_clean"]) == wers[8000, "s3router"][0]
    assert text == (tmp_path / "scaling.md").read_text().rstrip("\n")
    assert "| 4000 |  | 700 |" in text and "±" in text
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    # one seed finished both runs on both backbones: no interval over seeds for the change
    assert [r["gap_change_seeds"] for r in rows] == [None, None]
    assert [r["pretrain_tflops"] for r in rows] == [None, None]  # no run options, no configs


def test_scaling_change_seed_by_seed_and_pretraining_compute(tmp_path):
    from s3brain.backbone.wrapper import default_backbone
    from s3brain.training.pretraining import step_flops

    scaling_runs(tmp_path, unfinished=False)
    (tmp_path / "pretrain" / "hyperparams.yaml").write_text(
        "seed: 1234\nmodel_config: &id001 !apply:s3brain.backbone.default_backbone []\n"
        "batch_size: 2\ncrop_seconds: 0.5  # a comment\nmask_prob: 0.5\nmask_length: 5\n"
        "model: !apply:s3brain.training.pretraining.new_pretraining_model\n  config_dir: *id001\n")
    shutil.copy(Path(default_backbone()) / "config.json",
                scaling.backbone_folder(tmp_path, 8000) / "config.json")
    rows = scaling.scaling_rows(tmp_path, [4000, 8000], [1986, 1987])
    assert rows[0]["gap_change_seeds"] is None and rows[0]["weight_ft_change_seeds"] is None
    # per seed, the gap goes from two words in nine to one, weight fine-tuning loses one word
    for key in ("gap_change_seeds", "weight_ft_change_seeds"):
        change = rows[1][key]
        assert change["seeds"] == 2 and change["excludes_zero"]
        assert change["difference"] == pytest.approx(-100 / WORDS)
        assert change["low"] == pytest.approx(change["high"])
    assert rows[0]["pretrain_tflops"] is None  # this backbone has no config
    assert rows[1]["pretrain_tflops"] == round(8000 * step_flops(default_backbone(), 2, 0.5)
                                               / 1e12, 2) > 0
    (tmp_path / "pretrain" / "hyperparams.yaml").write_text("batch_size: 2\ncrop_seconds: 0\n")
    assert scaling.pretrain_tflops(tmp_path, [8000]) == {8000: None}  # whole utterances
    assert scaling.trend_over_seeds(tmp_path, [4000, 8000], [1986, 1987]) is None  # two points
    # a third backbone, 16000 steps: no gap, weight fine-tuning a word better again
    for seed in (1986, 1987):
        root = tmp_path / "step16000" / f"seed{seed}"
        wer_run(root / "weight_ft", every(2 + seed % 2))
        wer_run(root / "s3router", every(2 + seed % 2), strategy="s3router", sparsity=0.1)
    trends = scaling.trend_over_seeds(tmp_path, [4000, 8000, 16000], [1986, 1987])
    for name in ("gap", "weight_ft"):  # one word in nine less per doubling, every seed
        assert trends[name]["slopes"] == pytest.approx([-100 / WORDS] * 2)
        assert trends[name]["difference"] == pytest.approx(-100 / WORDS)
    assert trends["gap_lm"] is None  # no LM decoding's files here
    text = scaling.write_report(tmp_path, [4000, 8000, 16000], [1986, 1987])
    assert f"gap {-100 / WORDS:+.2f} [" in text.split("Per doubling")[1]


def test_scaling_jobs_and_pretraining_command(tmp_path, monkeypatch):
    args = scaling.parse_args(["--steps", "8000", "4000", "--seeds", "1", "2", "--out",
                               str(tmp_path), "--pretrain_run_opts", "--device=cuda:0 --lr=1e-3",
                               "--", "--device=cuda:0", "--number_of_epochs=2"])
    jobs = scaling.jobs_for(args.steps, args.seeds, args.out, args.overrides)
    assert [(j.step, j.seed, j.yaml) for j in jobs] == [
        (step, seed, yaml) for step in (4000, 8000) for seed in (1, 2)
        for yaml in ("weight_ft.yaml", "s3router.yaml")]
    job = jobs[-1]
    assert job.folder == tmp_path / "step8000" / "seed2" / "s3router"
    assert job.overrides == [f"--ssl_hub={tmp_path / 'pretrain' / 'hf_model_step8000'}",
                             "--device=cuda:0", "--number_of_epochs=2", "--seed=2"]
    cmd = scaling.pretrain_command(args.steps, args.out, args.pretrain_yaml,
                                   args.pretrain_run_opts)
    assert cmd[1:] == [str(scaling.PRETRAIN / "train.py"),
                       str(scaling.PRETRAIN / "hparams" / "wav2vec2_tiny.yaml"),
                       f"--output_folder={tmp_path / 'pretrain'}", "--max_steps=8000",
                       "--total_steps=8000", "--export_steps=[4000,8000]", "--device=cuda:0",
                       "--lr=1e-3"]

    class Recorder:
        """A launcher that writes the backbones the command asks for."""
        commands = []

        def run(self, cmd, env, log_path):
            self.commands.append(cmd)
            for step in (4000, 8000):
                folder = scaling.backbone_folder(tmp_path, step)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "training.json").write_text(json.dumps({"steps": step}))
            return 0

    launcher = Recorder()
    assert scaling.pretrain(args, launcher) == []
    assert launcher.commands == [cmd]
    assert scaling.pretrain(args, launcher) == []  # every backbone written: not run again
    assert len(launcher.commands) == 1


def test_scaling_one_pretraining_run_per_length(tmp_path):
    """Each length its own run in ``len<N>``: one pretraining command per length, the jobs
    fine-tune from that run's backbone, and the report reads the same figures as from one run."""
    args = scaling.parse_args(["--steps", "8000", "4000", "--seeds", "1", "--out", str(tmp_path),
                               "--one-run-per-length", "--", "--device=cuda:0"])
    jobs = scaling.jobs_for(args.steps, args.seeds, args.out, args.overrides, args.per_length)
    assert [(j.step, j.folder.relative_to(tmp_path).as_posix(), j.overrides[0]) for j in jobs] == [
        (step, f"len{step}/step{step}/seed1/{name}",
         f"--ssl_hub={tmp_path / f'len{step}' / 'pretrain' / f'hf_model_step{step}'}")
        for step in (4000, 8000) for name in ("weight_ft", "s3router")]

    class Recorder:
        """A launcher that writes the backbone of the command's run (its one export step)."""
        commands = []

        def run(self, cmd, env, log_path):
            self.commands.append(cmd)
            step = int(cmd[-1].removeprefix("--export_steps=[").removesuffix("]"))
            folder = Path(cmd[3].split("=", 1)[1]) / f"hf_model_step{step}"
            folder.mkdir(parents=True)
            (folder / "training.json").write_text(json.dumps({"steps": step}))
            return 0

    launcher = Recorder()
    assert scaling.pretrain(args, launcher) == []
    assert [c[3:] for c in launcher.commands] == [
        [f"--output_folder={tmp_path / f'len{step}' / 'pretrain'}", f"--max_steps={step}",
         f"--total_steps={step}", f"--export_steps=[{step}]"] for step in (4000, 8000)]
    assert [scaling.backbone_card(tmp_path, s, per_length=True)["steps"] for s in (4000, 8000)] \
        == [4000, 8000]
    assert scaling.pretrain(args, launcher) == [] and len(launcher.commands) == 2  # not again

    one, each = tmp_path / "one", tmp_path / "each"
    assert scaling_runs(one) == scaling_runs(each, per_length=True)
    assert not (each / "step4000").exists()
    rows = scaling.scaling_rows(each, [4000, 8000], [1986, 1987], per_length=True)
    assert rows == scaling.scaling_rows(one, [4000, 8000], [1986, 1987])
    assert rows[0]["gap_wer_test_clean"]["difference"] == pytest.approx(200 / WORDS, abs=0.01)
    assert [r["pretrain_seconds"] for r in rows] == [700, 1400]
    text = scaling.write_report(each, [4000, 8000], [1986, 1987], per_length=True)
    assert "One pretraining run per length" in text
    assert "One pretraining run, its learning rate" in scaling.write_report(
        one, [4000, 8000], [1986, 1987])


def test_scaling_schedule_effect_against_the_exports_of_one_run(tmp_path):
    """Per length, the own run's backbone minus the one-run export, paired by seed: here the own
    4000-step run gives S3-Router one word fewer per utterance than the export (every seed), so
    its WER and the gap drop by a ninth and weight fine-tuning's does not move."""
    FIGURES = scaling.FIGURES
    one, each = tmp_path / "one", tmp_path / "each"
    scaling_runs(one, unfinished=False)
    scaling_runs(each, unfinished=False, per_length=True)
    for seed in (1986, 1987):
        wer_run(scaling.run_folder(each, 4000, True) / "step4000" / f"seed{seed}" / "s3router",
                every(3 + seed % 2 + 1 + 1), strategy="s3router", sparsity=0.1)
    rows = scaling.schedule_effect(one, each, [8000, 4000], [1986, 1987])
    assert [r["steps"] for r in rows] == [4000, 8000]
    for name in ("s3router", "gap"):
        assert rows[0][name]["difference"] == pytest.approx(-100 / WORDS)
        assert rows[0][name]["excludes_zero"] and rows[0][name]["seeds"] == 2
    assert rows[0]["weight_ft"]["difference"] == 0 and not rows[0]["weight_ft"]["excludes_zero"]
    assert all(rows[1][k]["difference"] == 0 for k in FIGURES)  # the same runs
    assert all(r[f"{k}_lm"] is None for r in rows for k in FIGURES)  # no LM decoding's files
    text = scaling.schedule_report(one, each, [4000, 8000], [1986, 1987])
    assert f"| 4000 | +0.00 [+0.00, +0.00] | {-100 / WORDS:+.2f} [" in text
    assert (each / "schedules.md").read_text().rstrip("\n") == text
    assert (each / "schedules.png").read_bytes()[:4] == b"\x89PNG"
    shutil.rmtree(each / "len8000")
    (each / "len8000").symlink_to(one)  # the one run to 8000 steps is the 8000-step run
    assert [r["steps"] for r in scaling.schedule_effect(one, each, [4000, 8000], [1986])] \
        == [4000]
    with pytest.raises(SystemExit):  # the comparison needs the per-length layout
        scaling.parse_args(["--against-one-run", str(one), "--report-only"])
