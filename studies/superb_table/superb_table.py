#!/usr/bin/env python3
"""S3-Router across SUPERB-like tasks (the S3-Router paper's Tab. 5 layout): per task, weight
fine-tuning against S3-Router at its best sparsity; then one backbone serving every task
through the mask bank.

Every run is the task's recipe (``recipes/SUPERB/<task>/train.py``) in its own folder under
``--out``; finished runs are reused. After the runs, the best S3-Router mask file of every task
is loaded into one ``MaskBank`` on one dense backbone, and each task's test set is scored again
with that task switched in: the scores must equal the task's own run.

    ./s3env python studies/superb_table/superb_table.py                         # all tasks, the
    grid ./s3env python studies/superb_table/superb_table.py --tasks KS IC --sparsities 0.05 0.1
    ./s3env python studies/superb_table/superb_table.py --report-only
    ./s3env python studies/superb_table/superb_table.py --seeds 1986 1987 1988    # three seeds a
    run

- ``--seeds S ...``: every run once per seed (``--seed=S``). The yamls' own seed (1986) keeps
  the folder a run without ``--seeds`` has (``<out>/<task>/<run>``), so earlier runs are reused
  as that seed; every other seed runs in ``<out>/<task>/seed<S>/<run>``. Besides the table of
  the yamls' seed (``superb_table.md``, unchanged), ``superb_table_seeds.md`` gives per task the
  test accuracy as mean +- std over the seeds for weight fine-tuning and for S3-Router at the
  sparsity with the best mean dev accuracy, and the accuracy difference S3-Router - weight
  fine-tuning with its paired bootstrap 95 % interval over the test utterances of every seed
  (from each run's ``predictions_test.csv``: an utterance counts as right when every target is,
  ``s3brain.compare.stats.prediction_errors``), ``*`` where it excludes 0; then the same per sparsity.
  Give ``--seeds`` with ``--report-only`` too.
- ``--executor local|slurm`` (``--slurm-partition``, ``--timeout-min``): each run goes to
  submitit (``s3brain.compare.SubmititLauncher``), ``--jobs`` in flight at once.
"""

import argparse
import concurrent.futures
import json
from pathlib import Path

import speechbrain as sb
import torch

from s3brain.backbone.audio import backbone_rate
from s3brain.backbone.wrapper import default_backbone, load_ssl
from s3brain.compare.launch import add_executor_options, launcher_for, run_strategy
from s3brain.compare.stats import mean_std, paired_bootstrap_files, prediction_errors, seed_interval
from s3brain.compare.tables import interval_text
from s3brain.lobes.heads import build_head
from s3brain.strategies.s3router.mask_bank import MaskBank
from s3brain.training.utterance import classification_metrics, dataio_prepare

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SEED = next(line.split(":", 1)[1].strip() for line in (
    REPO / "recipes" / "SUPERB" / "KS" / "hparams" / "weight_ft.yaml").read_text().splitlines()
    if line.startswith("seed:"))
TASKS = {  # recipe folder: (name, targets, slot targets, metric shown)
    "KS": ("Keyword spotting", ("label",), (), "Acc"),
    "SID": ("Speaker identification", ("label",), (), "Acc"),
    "IC": ("Intent classification", ("action", "object", "location"), ("object", "location"),
           "Acc"),
    "PR": ("Prosody (paralinguistics)", ("label",), (), "Acc"),
}


def finished(folder):
    path = Path(folder) / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if results.get("accuracy_test") is not None else None


def seed_root(root, seed):
    """Where a task's runs of ``seed`` live: the task's folder for no seed and for the yamls'
    own seed (runs made without ``--seeds`` are reused as that seed), else ``seed<S>/``."""
    if seed is None or str(seed) == DEFAULT_SEED:
        return Path(root)
    return Path(root) / f"seed{seed}"


def run(task, yaml, folder, overrides, launcher=None):
    results, status = run_strategy(REPO / "recipes" / "SUPERB" / task, yaml, folder,
                                   [f"--{k}={v}" for k, v in overrides.items()], threads=1,
                                   log_name="superb.log", launcher=launcher)
    if finished(folder) is None:
        print(f"{task} {folder.name}: {status}", flush=True)
    else:
        print(f"{task} {folder.name}: accuracy {finished(folder)['accuracy_test']}", flush=True)


def jobs_for(args):
    """The runs not finished yet: ``(task, yaml, folder, overrides)``, seed by seed."""
    common = dict(item.split("=", 1) for item in args.set)
    jobs = []
    for task in args.tasks:
        for seed in getattr(args, "seeds", None) or [None]:
            root = seed_root(args.out / task, seed)
            base = common if seed is None else {**common, "seed": seed}
            jobs.append((task, "weight_ft.yaml", root / "weight_ft", base))
            for sp in args.sparsities:
                jobs.append((task, "s3router.yaml", root / f"s3router_{sp}",
                             {**base, "sparsity": sp}))
    return [j for j in jobs if finished(j[2]) is None]


def best_s3router(root):
    """The S3-Router run with the best dev accuracy (the test score is not used to choose)."""
    runs = [(p.parent, finished(p.parent)) for p in sorted(root.glob("s3router_*/results.json"))]
    runs = [(folder, r) for folder, r in runs if r is not None]
    if not runs:
        return None, None
    return max(runs, key=lambda fr: (dev_accuracy(fr[0]), -fr[1]["sparsity"]))


def dev_accuracy(folder):
    """Dev accuracy of the checkpoint a run was tested with (the lowest dev error)."""
    ckpt = sb.utils.checkpoints.Checkpointer(folder / "save").find_checkpoint(min_key="error")
    return ckpt.meta.get("dev_accuracy", 0.0) if ckpt else 0.0


def projection_of(folder):
    """The head's projection size, from the run's saved hyperparameters."""
    for line in (folder / "hyperparams.yaml").read_text().splitlines():
        if line.startswith("projection:"):
            return int(line.split(":")[1])
    return 256


@torch.no_grad()
def bank_scores(args, chosen):
    """Score each task's test set with its masks and head switched in on one shared backbone."""
    ssl = load_ssl(default_backbone(), args.out / "bank_backbone", freeze=True,
                   output_all_hiddens=True).eval()
    bank = MaskBank(ssl)
    data = {}
    for task, folder in chosen.items():
        _, targets, slots, _ = TASKS[task]
        manifests = {s: folder / f"{s}.csv" for s in ("train", "valid", "test")}
        _, _, test, encoders = dataio_prepare(manifests, targets, folder / "save",
                                              backbone_rate(ssl))
        head = build_head(ssl, encoders, projection_of(folder))
        bank.load_adapter(folder / "task_mask.safetensors", task, head=head.eval())
        data[task] = (test, encoders, targets, slots)
    scores = {}
    for task, (test, encoders, targets, slots) in data.items():
        head = bank.set_adapter(task)
        predictions, truth = {t: [] for t in targets}, {t: [] for t in targets}
        loader = sb.dataio.dataloader.make_dataloader(test, batch_size=8)
        for batch in loader:
            wavs, wav_lens = batch.sig
            logits = head(ssl(wavs, wav_lens), wav_lens)
            for t in targets:
                predictions[t] += logits[t].argmax(-1).tolist()
                truth[t] += getattr(batch, f"{t}_id").data[:, 0].tolist()
        scores[task] = classification_metrics(predictions, truth, targets, slots, encoders)
    backbone = sum(p.numel() * p.element_size() for p in ssl.parameters())
    return scores, backbone


def report(args):
    columns, rows = [], {"Metric": [], "Weight fine-tuning": [], "S3-Router": [],
                         "Best sparsity": [], "Storage per task (S3-Router)": []}
    chosen = {}
    for task in args.tasks:
        name, targets, slots, metric = TASKS[task]
        dense = finished(args.out / task / "weight_ft")
        folder, best = best_s3router(args.out / task)
        keys = [("accuracy_test", "Acc %")] + ([("slot_f1_test", "Slot F1 %")] if slots else [])
        for key, label in keys:
            columns.append(name if key == "accuracy_test" else "Slot filling")
            rows["Metric"].append(label)
            rows["Weight fine-tuning"].append(f"{dense[key]:.2f}" if dense else "")
            rows["S3-Router"].append(f"{best[key]:.2f}" if best else "")
            rows["Best sparsity"].append(f"{best['sparsity']:g}" if best else "")
            rows["Storage per task (S3-Router)"].append(
                f"{best['storage_bytes_per_task']:,} B ({best['storage_share_of_backbone']:.1%})"
                if best else "")
        if best:
            chosen[task] = folder
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {k} | " + " | ".join(v) + " |" for k, v in rows.items()]
    table = "\n".join(lines)
    sweep = ["", "| task | " + " | ".join(f"sparsity {s}" for s in args.sparsities) + " |",
             "|---" * (len(args.sparsities) + 1) + "|"]
    for task in args.tasks:
        cells = []
        for sp in args.sparsities:
            r = finished(args.out / task / f"s3router_{sp}")
            cells.append("" if r is None else f"{r['accuracy_test']:.2f}")
        sweep.append(f"| {task} | " + " | ".join(cells) + " |")
    text = table + "\n\nS3-Router test accuracy at each sparsity (the best is chosen on dev):\n" + \
        "\n".join(sweep)
    if chosen and not args.no_bank:
        scores, backbone = bank_scores(args, chosen)
        files = sum((chosen[t] / "task_mask.safetensors").stat().st_size for t in chosen)
        same = all(abs(scores[t]["accuracy"] - finished(chosen[t])["accuracy_test"]) < 0.01
                   for t in chosen)
        text += ("\n\nOne backbone, every task through the mask bank (test accuracy with the "
                 "task switched in; its own run in brackets):\n" +
                 "\n".join(f"- {t}: {scores[t]['accuracy']:.2f} "
                           f"({finished(chosen[t])['accuracy_test']:.2f})" for t in chosen) +
                 f"\n\nSame as the separate runs: {same}. Storage for {len(chosen)} tasks: "
                 f"{backbone + files:,} bytes (backbone {backbone:,} + mask files {files:,}).")
    (args.out / "superb_table.md").write_text(text + "\n")
    print(text)


def over_seeds(folders, key):
    """``(mean, std, finished)`` of ``key`` in the finished runs among ``folders`` (None for the
    mean when none finished; std 0 for one).

    Example
    -------
    >>> over_seeds([], "accuracy_test")
    (None, None, 0)
    """
    values = [r[key] for r in map(finished, folders) if r is not None and r.get(key) is not None]
    if not values:
        return None, None, 0
    return (*mean_std(values), len(values))


def accuracy_interval(reference, system):
    """The paired bootstrap interval of the test accuracy difference ``system - reference``
    over the utterances of every seed where both runs finished (None if none did).

    Arguments
    ---------
    reference, system : list of Path
        One run folder per seed, in the same seed order.
    """
    pairs = [(a / "predictions_test.csv", b / "predictions_test.csv")
             for a, b in zip(reference, system) if finished(a) and finished(b)]
    return paired_bootstrap_files(pairs, read=prediction_errors, accuracy=True)


def accuracy_seed_interval(reference, system, key="accuracy_test"):
    """The t interval over the seeds of the accuracy difference ``system - reference``, from the
    seeds where both runs finished (``seed_interval``; None with fewer than two).

    Arguments
    ---------
    reference, system : list of Path
        One run folder per seed, in the same seed order.
    key : str
        The results key.
    """
    pairs = [(finished(a), finished(b)) for a, b in zip(reference, system)]
    diffs = [b[key] - a[key] for a, b in pairs if a and b and None not in (a.get(key), b.get(key))]
    return seed_interval(diffs) if len(diffs) > 1 else None


def spread_text(mean, std, count, seeds):
    """``mean ± std`` (and ``(k/n seeds)`` when some did not finish); empty for none."""
    if mean is None:
        return ""
    missing = f" ({count}/{len(seeds)} seeds)" if count < len(seeds) else ""
    return f"{mean:.2f} ± {std:.2f}{missing}"


def report_seeds(args):
    """``superb_table_seeds.md``: weight fine-tuning against S3-Router at its best sparsity
    (best mean dev accuracy over the seeds), test accuracy mean +- std over ``args.seeds`` and
    the paired bootstrap interval of the accuracy difference; then every sparsity."""
    seeds = args.seeds

    def folders(task, run_name):
        return [seed_root(args.out / task, seed) / run_name for seed in seeds]

    lines = [f"Test accuracy (%), mean ± std over seeds {' '.join(map(str, seeds))}; "
             "Δ: S3-Router - weight fine-tuning, paired bootstrap 95 % interval over the test "
             "utterances of every seed, and the t interval over the seeds' differences "
             "(training noise counted; * = excludes 0). S3-Router's sparsity is the one with "
             "the best mean dev accuracy.", "",
             "| task | metric | weight fine-tuning | S3-Router | best sparsity | Δ (95 % CI) "
             "| Δ over seeds (t) |", "|---" * 7 + "|"]
    for task in args.tasks:
        name, targets, slots, _ = TASKS[task]
        dense = folders(task, "weight_ft")
        candidates = []
        for sp in args.sparsities:
            done = [f for f in folders(task, f"s3router_{sp}") if finished(f)]
            if done:
                dev = sum(dev_accuracy(f) for f in done) / len(done)
                candidates.append((dev, -float(sp), sp))
        best = max(candidates)[2] if candidates else None
        chosen = folders(task, f"s3router_{best}") if best else []
        interval = accuracy_interval(dense, chosen) if best else None
        keys = [("accuracy_test", "Acc %")] + ([("slot_f1_test", "Slot F1 %")] if slots else [])
        for key, label in keys:
            delta = interval_text(interval) if interval and key == "accuracy_test" else ""
            over = accuracy_seed_interval(dense, chosen, key) if best else None
            lines.append(f"| {name} | {label} | {spread_text(*over_seeds(dense, key), seeds)} "
                         f"| {spread_text(*over_seeds(chosen, key), seeds)} | {best or ''} "
                         f"| {delta} | {interval_text(over) if over else ''} |")
    lines += ["", "S3-Router test accuracy at each sparsity, and Δ against weight fine-tuning:",
              "", "| task | " + " | ".join(f"sparsity {s}" for s in args.sparsities) + " |",
              "|---" * (len(args.sparsities) + 1) + "|"]
    for task in args.tasks:
        dense, cells = folders(task, "weight_ft"), []
        for sp in args.sparsities:
            runs = folders(task, f"s3router_{sp}")
            interval = accuracy_interval(dense, runs)
            cells.append(spread_text(*over_seeds(runs, "accuracy_test"), seeds) +
                         (f"<br>Δ {interval_text(interval)}" if interval else ""))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (args.out / "superb_table_seeds.md").write_text(text + "\n")
    print(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "SUPERB_table")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--sparsities", nargs="*", default=["0.02", "0.05", "0.1", "0.2"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an hparams override for every run")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", nargs="+", default=None, metavar="SEED",
                        help="every run once per seed; mean +- std and paired bootstrap "
                             "intervals of the accuracy difference (superb_table_seeds.md)")
    add_executor_options(parser, sep="-")
    parser.add_argument("--no-bank", action="store_true", help="skip the mask-bank check")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        launcher = launcher_for(args, cpus_per_task=1)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: run(*job, launcher), jobs_for(args)))
    report(args)
    if args.seeds:
        report_seeds(args)


if __name__ == "__main__":
    main()
