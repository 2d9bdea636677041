#!/usr/bin/env python3
"""Does S3-Router's gap to weight fine-tuning shrink as the backbone pretrains longer?

One pretraining run (``recipes/LibriSpeech/pretrain``) for the largest of ``--steps`` optimizer
steps, its learning rate decaying over that length, writes the encoder at every step of
``--steps`` (``export_steps``: ``<out>/pretrain/hf_model_step<N>``). From each of these
backbones weight fine-tuning and S3-Router (``recipes/LibriSpeech/hparams/weight_ft.yaml``,
``s3router.yaml``) fine-tune once per seed (``--ssl_hub=<backbone>``, ``--seed=<S>``) in
``<out>/step<N>/seed<S>/<yaml stem>``. The report, ``<out>/scaling.md`` / ``scaling.csv`` and
``scaling.png``, gives per backbone its pretraining steps and seconds, both test-clean WERs
(greedy and with the LM, mean +- std over the seeds) and the gap (S3-Router minus weight
fine-tuning, greedy) with its paired bootstrap 95 % interval over the test utterances of every
seed (``s3brain.compare.pooled_over_seeds``) and its t interval over the seeds, how far the gap
and weight fine-tuning's WER moved from the first backbone's (seed by seed), and the
pretraining compute in TFLOPs (``s3brain.training.pretraining.step_flops`` times the steps).

On a GPU (each fine-tuning run its own process; several fit on one large GPU at once)::

    python studies/backbone_scaling/backbone_scaling.py --steps 4000 8000 16000 32000 \\
        --seeds 1986 1987 1988 --out results/scaling --jobs 3 \\
        --pretrain_run_opts="--device=cuda:0" -- --device=cuda:0

On the CPU (about 6 h of pretraining alone for 32k steps)::

    OMP_NUM_THREADS=1 ./s3env python studies/backbone_scaling/backbone_scaling.py \\
        --steps 4000 8000 16000 32000 --seeds 1986 1987 1988 --out results/scaling \\
        --jobs 2 --threads 1

- ``--pretrain_run_opts "..."``: options of the pretraining run (SpeechBrain's run options
  such as ``--device=cuda:0``, or yaml overrides such as ``--batch_size=32``); the options after
  ``--`` go to every fine-tuning run (``--device=cuda:0 --train_splits='["train-1h"]'``).
- Everything resumes: the pretraining run continues from its checkpoint (and is skipped when
  every backbone is written), a fine-tuning run whose ``results.json`` is complete is reused.
  ``--report-only`` writes the report from the runs there are.
- ``--executor local|slurm`` (``--slurm-partition``, ``--timeout-min``): the runs go to
  submitit (``s3brain.compare.launcher_for``).

The backbones of one run are not those of separate runs of each length: the 4k backbone of a
32k run is taken while the learning rate is still high. That is the cheap way to ask the
question (one pretraining), and what the table's "pretraining steps" means.
``--one-run-per-length`` asks it the dear way: one pretraining run per length, each with its
learning rate decaying to 0 at its own end (``<out>/len<N>`` is then the folder of this study
run with ``--steps N`` alone; the report joins them), so that a figure that moves with the
length is not the end of the learning-rate schedule. ``--against-one-run <one-run out>`` adds
each such backbone minus the export at the same step of one run (``schedules.md``,
``schedules.png``)::

    python studies/backbone_scaling/backbone_scaling.py --steps 2000 4000 8000 --one-run-per-length
        \
        --seeds 1986 1987 1988 --out results/scaling_lengths --against-one-run results/scaling
"""

import argparse
import collections
import concurrent.futures
import json
import os
import shlex
import sys
from pathlib import Path

from s3brain.compare.collect import finished_results, pooled_over_seeds, row_for
from s3brain.compare.launch import (
    SubprocessLauncher,
    add_executor_options,
    launcher_for,
    run_strategy,
)
from s3brain.compare.stats import error_rate, seed_interval, utterance_errors
from s3brain.compare.tables import interval_text, markdown_table, write_tables

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "LibriSpeech"
PRETRAIN = RECIPE / "pretrain"
#: the reference first: the gap is the other minus it
YAMLS = ("weight_ft.yaml", "s3router.yaml")
#: one fine-tuning run: the backbone's ``step``, the ``seed``, the ``yaml``, its ``folder``, its
#: command-line ``overrides`` and the ``backbone``'s folder
Job = collections.namedtuple("Job", "step seed yaml folder overrides backbone")
COLUMNS = ["steps", "pretrain_tflops", "pretrain_seconds", "status", "weight_ft_wer_test_clean",
           "s3router_wer_test_clean", "gap_wer_test_clean", "gap_wer_test_clean_seeds",
           "gap_change_seeds", "weight_ft_change_seeds", "weight_ft_wer_test_clean_lm",
           "s3router_wer_test_clean_lm", "gap_wer_test_clean_lm"]


def run_folder(out, step, per_length=False):
    """The folder of the one-run study that holds the backbone at ``step`` and its
    fine-tuning runs: ``out`` itself, or with ``per_length`` (one pretraining run per length)
    ``out/len<step>``.

    Example
    -------
    >>> run_folder(Path("scaling"), 4000, per_length=True).as_posix()
    'scaling/len4000'
    """
    return Path(out) / f"len{step}" if per_length else Path(out)


def backbone_folder(out, step, per_length=False):
    """Where the pretraining run writes its encoder at ``step``.

    Example
    -------
    >>> backbone_folder(Path("scaling"), 4000).as_posix()
    'scaling/pretrain/hf_model_step4000'
    >>> backbone_folder(Path("scaling"), 4000, per_length=True).as_posix()
    'scaling/len4000/pretrain/hf_model_step4000'
    """
    return run_folder(out, step, per_length) / "pretrain" / f"hf_model_step{step}"


def backbone_card(out, step, per_length=False):
    """The backbone's ``training.json`` (steps, train_seconds...), None while it is not written.
    """
    path = backbone_folder(out, step, per_length) / "training.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_hparams(out):
    """The pretraining run's options as it saved them (``<out>/pretrain/hyperparams.yaml``,
    overrides applied; ``out`` a ``run_folder``); the ``!tags`` read as None. None while the run
    has not started."""
    import yaml

    path = Path(out) / "pretrain" / "hyperparams.yaml"
    if not path.exists():
        return None

    class Loader(yaml.SafeLoader):
        """Reads HyperPyYAML's tags as None."""

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load(path.read_text(), Loader=Loader)


def pretrain_tflops(out, steps, per_length=False):
    """The pretraining compute of the backbones at ``steps``: each step count times the FLOPs
    of one optimizer step (forward and backward, ``s3brain.training.pretraining.step_flops``) on a batch
    of the run's ``batch_size`` crops of ``crop_seconds``, in TFLOPs (1e12). An upper bound where
    utterances are shorter than the crop (their batches are padded to it, and counted so). The
    backbones share their architecture and options (one run, or with ``per_length`` one
    command's runs), so one step is counted once, from the first run that saved its options.

    Returns
    -------
    dict
        ``{step: TFLOPs}``; None for a backbone without its config, and for every backbone
        without the run's options or when the run trained on whole utterances
        (``crop_seconds: 0``: its steps differ in length).
    """
    from s3brain.training.pretraining import step_flops

    hparams = next(filter(None, (run_hparams(run_folder(out, step, per_length))
                                 for step in steps)), None)
    configs = {step: backbone_folder(out, step, per_length) / "config.json" for step in steps}
    written = [c for c in configs.values() if c.exists()]
    if not hparams or not written or not hparams.get("crop_seconds"):
        return dict.fromkeys(steps)
    per_step = step_flops(written[0].parent, hparams["batch_size"], hparams["crop_seconds"],
                          mask_prob=hparams.get("mask_prob", 0.5),
                          mask_length=hparams.get("mask_length", 5))
    return {step: round(step * per_step / 1e12, 2) if config.exists() else None
            for step, config in configs.items()}


def pretrain_command(steps, out, yaml="wav2vec2_tiny.yaml", run_opts=""):
    """The pretraining run that writes every backbone of ``steps``.

    Arguments
    ---------
    steps : list of int
        The optimizer steps to export at; the run stops (and its learning rate reaches 0) at
        the largest.
    out : Path
        The study's folder (the run goes in ``out/pretrain``).
    yaml : str
        The pretraining hparams file (in ``recipes/LibriSpeech/pretrain/hparams``).
    run_opts : str
        More options of the run, as one shell-quoted string.

    Returns
    -------
    list of str

    Example
    -------
    >>> cmd = pretrain_command([8000, 4000], Path("o"), run_opts="--device=cuda:0")
    >>> cmd[4:]
    ['--max_steps=8000', '--total_steps=8000', '--export_steps=[4000,8000]', '--device=cuda:0']
    """
    steps = sorted(set(steps))
    return [sys.executable, str(PRETRAIN / "train.py"), str(PRETRAIN / "hparams" / yaml),
            f"--output_folder={Path(out) / 'pretrain'}", f"--max_steps={steps[-1]}",
            f"--total_steps={steps[-1]}", f"--export_steps=[{','.join(map(str, steps))}]",
            *shlex.split(run_opts)]


def pretrain(args, launcher=None):
    """Run (or continue) the pretraining unless every backbone of ``args.steps`` is written:
    one run to the largest, or with ``args.per_length`` one run per length, one after the other.

    Returns
    -------
    list of int
        The steps whose backbone is missing after the runs (a run failed or its epochs
        ended first: raise ``--number_of_epochs`` in ``--pretrain_run_opts``).
    """
    runs = [[s] for s in sorted(set(args.steps))] if args.per_length else [args.steps]
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    missing = []
    for steps in runs:
        out = run_folder(args.out, steps[0], args.per_length)
        if all(backbone_card(out, s) is not None for s in steps):
            continue
        folder = out / "pretrain"
        folder.mkdir(parents=True, exist_ok=True)
        cmd = pretrain_command(steps, out, args.pretrain_yaml, args.pretrain_run_opts)
        print(f"pretraining to step {max(steps)}, log in {folder / 'scaling.log'}", flush=True)
        code = (launcher or SubprocessLauncher()).run(cmd, env, folder / "scaling.log")
        lost = [s for s in steps if backbone_card(out, s) is None]
        if code != 0 or lost:
            print(f"pretraining: exit {code}, no backbone at steps {lost}", flush=True)
        missing += lost
    return missing


def jobs_for(steps, seeds, out, overrides=(), per_length=False):
    """Every fine-tuning run: per backbone step and seed, weight fine-tuning then S3-Router.

    Arguments
    ---------
    steps : list of int
        The backbones' steps.
    seeds : list of int
        The fine-tuning seeds.
    out : Path
        The study's folder.
    overrides : list of str
        Options of every run.
    per_length : bool
        One pretraining run per length (``run_folder``).

    Returns
    -------
    list of Job

    Example
    -------
    >>> [(j.step, j.seed, j.yaml) for j in jobs_for([4000], [1, 2], Path("o"))][:3]
    [(4000, 1, 'weight_ft.yaml'), (4000, 1, 's3router.yaml'), (4000, 2, 'weight_ft.yaml')]
    """
    jobs = []
    for step in sorted(set(steps)):
        backbone = backbone_folder(out, step, per_length)
        for seed in seeds:
            jobs += [Job(step, seed, yaml, run_folder(out, step, per_length) / f"step{step}"
                         / f"seed{seed}" / Path(yaml).stem,
                         [f"--ssl_hub={backbone}", *overrides, f"--seed={seed}"], backbone)
                     for yaml in YAMLS]
    return jobs


def fine_tune(jobs, jobs_at_once=1, threads=None, launcher=None):
    """Run every job whose backbone is written, ``jobs_at_once`` at a time; finished runs are
    reused (``s3brain.compare.run_strategy``).

    Arguments
    ---------
    jobs : list of Job
        The runs (``jobs_for``).
    jobs_at_once : int
        Runs at the same time.
    threads : int, optional
        CPU threads per run.
    launcher : SubmititLauncher, optional
        Where the runs go (default: child processes here).
    """

    def one(job):
        """Run or collect one job; print its status."""
        results, status = run_strategy(RECIPE, job.yaml, job.folder, job.overrides, threads,
                                       log_name="scaling.log", launcher=launcher)
        wer = results and results.get("wer_test_clean")
        print(f"step {job.step} seed {job.seed} {Path(job.yaml).stem}: {status}, "
              f"WER test-clean {wer}", flush=True)

    ready = [j for j in jobs if (j.backbone / "training.json").exists()]
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs_at_once)) as pool:
        list(pool.map(one, ready))


def seed_wers(out, step, seeds, lm=False, per_length=False):
    """Each seed's test-clean WER per strategy (greedy, or with the LM), from its per-utterance
    file, for the seeds where both strategies finished:
    ``{seed: {"weight_ft": wer, "s3router": wer}}``."""
    wers = {}
    folder = run_folder(out, step, per_length) / f"step{step}"
    for seed in seeds:
        runs = [folder / f"seed{seed}" / Path(y).stem for y in YAMLS]
        files = [run / ("wer_lm_test-clean.txt" if lm else "wer_test-clean.txt") for run in runs]
        if all(finished_results(run) and f.exists() for run, f in zip(runs, files)):
            wers[seed] = {Path(y).stem: error_rate(utterance_errors(f))
                          for y, f in zip(YAMLS, files)}
    return wers


def gap_of(wers):
    """S3-Router's WER minus weight fine-tuning's, for one seed's ``seed_wers``."""
    return wers["s3router"] - wers["weight_ft"]


#: the figures of one seed's ``seed_wers``: each strategy's WER and the gap
FIGURES = {"weight_ft": lambda w: w["weight_ft"], "s3router": lambda w: w["s3router"],
           "gap": gap_of}


def change_over_seeds(first, this, value):
    """The t interval over the seeds of ``value(this[seed]) - value(first[seed])``: how much a
    figure moved from the first backbone to this one, fine-tuning seed by fine-tuning seed (the
    backbones share the seeds, so the seed pairs them). None with fewer than two seeds in both.
    """
    seeds = sorted(set(first) & set(this))
    if len(seeds) < 2:
        return None
    return seed_interval([value(this[s]) - value(first[s]) for s in seeds])


def trend_over_seeds(out, steps, seeds, per_length=False):
    """How the gap and weight fine-tuning's WER move per doubling of pretraining: per seed, the
    least-squares slope of the figure against log2(steps) over every backbone, then the t
    interval of the slopes over the seeds (the seeds finished on every backbone).

    Returns
    -------
    dict or None
        ``{"gap": interval, "weight_ft": interval, "gap_lm": interval}``
        (``s3brain.compare.stats.seed_interval``, with ``slopes``: each seed's; ``gap_lm``: the gap
        with the LM, None without LM files), None with fewer than three backbones or two seeds.

    Example
    -------
    >>> import numpy as np
    >>> round(float(np.polyfit(np.log2([1000, 2000, 4000]), [5.0, 4.0, 3.0], 1)[0]), 6)
    -1.0
    """
    import numpy as np

    steps = sorted(set(steps))
    if len(steps) < 3:
        return None

    def slopes(per_step, value):
        common = sorted(set.intersection(*(set(w) for w in per_step)))
        if len(common) < 2:
            return None
        per_seed = [float(np.polyfit(np.log2(steps), [value(w[s]) for w in per_step], 1)[0])
                    for s in common]
        return {**seed_interval(per_seed), "slopes": per_seed}

    greedy = [seed_wers(out, step, seeds, per_length=per_length) for step in steps]
    with_lm = [seed_wers(out, step, seeds, lm=True, per_length=per_length) for step in steps]
    trends = {"gap": slopes(greedy, gap_of),
              "weight_ft": slopes(greedy, FIGURES["weight_ft"]),
              "gap_lm": slopes(with_lm, gap_of)}
    return trends if trends["gap"] else None


def scaling_rows(out, steps, seeds, per_length=False):
    """One row per backbone from the runs there are: its pretraining steps and seconds, each
    strategy's test-clean WERs (mean and ``_std`` over the seeds) and the gap.

    Arguments
    ---------
    out : Path
        The study's folder.
    steps : list of int
        The backbones' steps.
    seeds : list of int
        The fine-tuning seeds.
    per_length : bool
        One pretraining run per length (``run_folder``).

    Returns
    -------
    list of dict
        ``gap_wer_test_clean``: S3-Router minus weight fine-tuning, the paired bootstrap
        interval over the test utterances of every seed where both finished (a dict, as
        ``s3brain.compare.stats.paired_bootstrap`` gives it; None without a finished pair);
        ``gap_wer_test_clean_seeds``: the t interval of the same gap over the seeds
        (``s3brain.compare.stats.seed_interval``; None with fewer than two finished pairs);
        ``gap_wer_test_clean_lm``: the difference of the LM WERs' means;
        ``gap_change_seeds`` and ``weight_ft_change_seeds``: how far the gap and weight
        fine-tuning's WER moved from the first backbone's (``change_over_seeds``; None on the
        first row); ``pretrain_tflops``: ``pretrain_tflops``.
    """
    rows = []
    steps = sorted(set(steps))
    wers = {step: seed_wers(out, step, seeds, per_length=per_length) for step in steps}
    tflops = pretrain_tflops(out, steps, per_length)
    for step in steps:
        folder = run_folder(out, step, per_length) / f"step{step}"
        per_seed = {}
        for seed in seeds:
            per_seed[seed] = []
            for yaml in YAMLS:
                results = finished_results(folder / f"seed{seed}" / Path(yaml).stem)
                per_seed[seed].append(row_for(Path(yaml).stem, results,
                                              "ok" if results else "not finished"))
        pooled = {r["name"]: r for r in pooled_over_seeds(per_seed, folder, YAMLS[0],
                                                          ("test-clean",))}
        card = backbone_card(out, step, per_length) or {}
        row = {"steps": step, "pretrain_tflops": tflops[step],
               "pretrain_seconds": card.get("train_seconds"),
               "status": ", ".join(f"{name} {r['status']}" for name, r in pooled.items())}
        for name, r in pooled.items():
            finished = sum(run["name"] == name and run["status"] == "ok"
                           for runs in per_seed.values() for run in runs)
            for key in ("wer_test_clean", "wer_test_clean_lm"):
                row[f"{name}_{key}"] = r.get(key)
                # one finished seed has no spread
                row[f"{name}_{key}_std"] = r.get(f"{key}_std") if finished > 1 else None
        row["gap_wer_test_clean"] = pooled["s3router"].get("d_wer_test_clean")
        row["gap_wer_test_clean_seeds"] = pooled["s3router"].get("s_wer_test_clean")
        lm = [row.get(f"{n}_wer_test_clean_lm") for n in ("s3router", "weight_ft")]
        row["gap_wer_test_clean_lm"] = round(lm[0] - lm[1], 2) if None not in lm else None
        first, this = wers[steps[0]], wers[step]
        later = step != steps[0]
        row["gap_change_seeds"] = change_over_seeds(first, this, gap_of) if later else None
        row["weight_ft_change_seeds"] = change_over_seeds(
            first, this, FIGURES["weight_ft"]) if later else None
        rows.append(row)
    return rows


def steps_axis(ax, steps):
    """The pretraining steps on a log axis, ticked at ``steps``, with a grid."""
    ax.set_xscale("log")
    ax.set_xticks(steps, [f"{s:g}" for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("pretraining steps")
    ax.grid(alpha=0.3)


def plot(rows, path):
    """Both strategies' test-clean WER (error bars: std over seeds) and the gap (error bars:
    its interval) against the pretraining steps, on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (wers, gaps) = plt.subplots(1, 2, figsize=(10, 4))
    for name, label, colour in (("weight_ft", "weight fine-tuning", "tab:blue"),
                                ("s3router", "S3-Router", "tab:red")):
        for key, style in (("wer_test_clean", "-o"), ("wer_test_clean_lm", "--s")):
            points = [r for r in rows if r.get(f"{name}_{key}") is not None]
            if points:
                wers.errorbar([r["steps"] for r in points], [r[f"{name}_{key}"] for r in points],
                              yerr=[r.get(f"{name}_{key}_std") or 0 for r in points],
                              fmt=style, color=colour, capsize=3,
                              label=label + (" + LM" if key.endswith("_lm") else ""))
    wers.set_ylabel("test-clean WER %")
    wers.set_title("WER (error bars: std over seeds)", fontsize=9)
    wers.legend(fontsize=8)
    points = [r for r in rows if r.get("gap_wer_test_clean")]
    if points:
        gap = [r["gap_wer_test_clean"] for r in points]
        gaps.errorbar([r["steps"] for r in points], [g["difference"] for g in gap],
                      yerr=[[g["difference"] - g["low"] for g in gap],
                            [g["high"] - g["difference"] for g in gap]], fmt="-o", capsize=3,
                      label="by test utterances")
    points = [r for r in rows if r.get("gap_wer_test_clean_seeds")]
    if points:  # beside the other, a little to the right
        gap = [r["gap_wer_test_clean_seeds"] for r in points]
        gaps.errorbar([r["steps"] * 1.06 for r in points], [g["difference"] for g in gap],
                      yerr=[[g["difference"] - g["low"] for g in gap],
                            [g["high"] - g["difference"] for g in gap]], fmt="o", capsize=3,
                      color="tab:gray", label="over seeds (t)")
        gaps.legend(fontsize=8)
    gaps.axhline(0, color="k", lw=0.8)
    gaps.set_ylabel("WER points")
    gaps.set_title("gap: S3-Router - weight fine-tuning (greedy, 95 % intervals)", fontsize=9)
    # one run: its compute is proportional to its steps, so a second axis on top gives it
    per_step = [r["pretrain_tflops"] / r["steps"] for r in rows if r.get("pretrain_tflops")]
    for ax in (wers, gaps):
        steps_axis(ax, [r["steps"] for r in rows])
        if per_step:
            top = ax.secondary_xaxis("top", functions=(lambda s: s * per_step[0],
                                                       lambda t: t / per_step[0]))
            top.set_xticks([r["steps"] * per_step[0] for r in rows],
                           [f"{r['steps'] * per_step[0]:.3g}" for r in rows])
            top.minorticks_off()
            top.set_xlabel("pretraining TFLOPs", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def schedule_effect(one_run, per_length, steps, seeds):
    """What ending the learning-rate schedule at the backbone's own length changes: per step of
    ``steps`` present in both, each figure (weight fine-tuning's and S3-Router's WER, the gap;
    greedy and with the LM) of the per-length run's backbone minus that of the one-run export
    at the same step, paired by fine-tuning seed (``change_over_seeds``). A step whose two
    backbones are one folder (the one-run study's last run linked as ``len<N>``: a run to
    N steps is the same run whatever it exports) has no row.

    Arguments
    ---------
    one_run : Path
        A study folder of one pretraining run (its exports at ``steps``).
    per_length : Path
        A ``--one-run-per-length`` study folder.
    steps, seeds : list of int
        The backbones' steps and the fine-tuning seeds.

    Returns
    -------
    list of dict
        ``{"steps": N, "<figure>": interval, "<figure>_lm": interval}`` (None where fewer than
        two seeds finished in both).
    """
    rows = []
    for step in sorted(set(steps)):
        if backbone_folder(one_run, step).resolve() == \
                backbone_folder(per_length, step, True).resolve():
            continue
        row = {"steps": step}
        for lm in (False, True):
            exported = seed_wers(one_run, step, seeds, lm=lm)
            own = seed_wers(per_length, step, seeds, lm=lm, per_length=True)
            for name, value in FIGURES.items():
                row[name + ("_lm" if lm else "")] = change_over_seeds(exported, own, value)
        rows.append(row)
    return rows


def plot_schedules(one_run, per_length, steps, seeds, path):
    """Each figure of ``FIGURES`` (greedy) against the pretraining steps, for the exports of one
    run (dashed) and one run per length (solid): mean over the seeds, error bars their std (the
    gap's: its t interval over the seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = sorted(set(steps))
    fig, (wers, gaps) = plt.subplots(1, 2, figsize=(10, 4))
    for folder, each, style, label in ((one_run, False, "--", "exports of one run"),
                                       (per_length, True, "-", "one run per length")):
        per_step = {step: seed_wers(folder, step, seeds, per_length=each) for step in steps}
        points = [s for s in steps if len(per_step[s]) > 1]  # a spread needs two seeds
        if not points:
            continue
        for name, text, ax, colour in (
                ("weight_ft", "weight fine-tuning", wers, "tab:blue"),
                ("s3router", "S3-Router", wers, "tab:red"),
                ("gap", "gap", gaps, "tab:gray" if not each else "k")):
            values = [[FIGURES[name](w) for w in per_step[s].values()] for s in points]
            errors = [seed_interval(v)["high"] - np.mean(v) if name == "gap" else np.std(v, ddof=1)
                      for v in values]
            ax.errorbar([s * (1.04 if each else 1) for s in points], [np.mean(v) for v in values],
                        yerr=errors, fmt=style + "o", color=colour, capsize=3,
                        label=f"{text}, {label}")
    wers.set_ylabel("test-clean WER % (greedy)")
    wers.set_title("WER (error bars: std over seeds)", fontsize=9)
    gaps.axhline(0, color="k", lw=0.8)
    gaps.set_ylabel("WER points")
    gaps.set_title("gap: S3-Router - weight fine-tuning (t interval over seeds)", fontsize=9)
    for ax in (wers, gaps):
        steps_axis(ax, steps)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def schedule_report(one_run, per_length, steps, seeds):
    """``schedules.md`` and ``schedules.png`` in ``per_length`` (``schedule_effect``,
    ``plot_schedules``); the Markdown text."""
    rows = schedule_effect(one_run, per_length, steps, seeds)
    columns = ["steps", *FIGURES, *(f"{name}_lm" for name in FIGURES)]
    text = markdown_table(rows, columns) + (
        f"\n\nThe backbone of its own run (learning rate 0 at its end) minus the export of "
        f"{one_run} at the same step, greedy and with the LM (_lm), t interval over the "
        f"fine-tuning seeds {' '.join(map(str, seeds))} (paired by seed), * = excludes 0.")
    (Path(per_length) / "schedules.md").write_text(text + "\n")
    plot_schedules(one_run, per_length, steps, seeds, Path(per_length) / "schedules.png")
    return text


def write_report(out, steps, seeds, per_length=False):
    """``scaling.md``, ``scaling.csv`` and ``scaling.png`` in ``out``; the Markdown text."""
    rows = scaling_rows(out, steps, seeds, per_length)
    write_tables(rows, out, "scaling", COLUMNS)
    plot(rows, Path(out) / "scaling.png")
    text = markdown_table(rows, COLUMNS) + (
        f"\n\n+- : std over fine-tuning seeds {' '.join(map(str, seeds))}; gap: S3-Router minus "
        "weight fine-tuning (greedy), paired bootstrap 95 % interval over the test-clean "
        "utterances of every seed, * = excludes 0; the LM gap is the difference of the means. "
        "gap_change_seeds / weight_ft_change_seeds: the gap / weight fine-tuning's greedy WER "
        f"minus the {min(steps)}-step backbone's, t interval over the seeds (paired by seed). "
        "pretrain_tflops: steps x the FLOPs of one step (forward and backward) on a full batch. "
        + ("One pretraining run per length, each learning rate decaying to 0 at its end."
           if per_length else "One pretraining run, its learning rate decaying to 0 at "
           f"step {max(steps)}: the other backbones are taken on the way."))
    trends = trend_over_seeds(out, steps, seeds, per_length)
    if trends:
        text += "\n\nPer doubling of pretraining (least-squares slope against log2 steps, " \
                "per seed, then the t interval over the seeds): " + "; ".join(
                    f"{label} {interval_text(trends[name])} (per seed "
                    + " / ".join(f"{x:+.2f}" for x in trends[name]["slopes"]) + ")"
                    for name, label in (("gap", "gap"), ("weight_ft", "weight_ft WER"),
                                        ("gap_lm", "gap with the LM")) if trends[name])
    (Path(out) / "scaling.md").write_text(text + "\n")
    return text


def parse_args(argv=None):
    """The command line (see the module's docstring): options, then ``--`` and the options of
    every fine-tuning run (``args.overrides``); ``sys.argv[1:]`` when None."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4000, 8000, 16000, 32000],
                        help="pretraining steps of the backbones (one run to the largest)")
    parser.add_argument("--one-run-per-length", dest="per_length", action="store_true",
                        help="one pretraining run per length of --steps (in <out>/len<N>)")
    parser.add_argument("--against-one-run", type=Path, default=None, metavar="OUT",
                        help="with --one-run-per-length: also compare each backbone with the "
                             "export at the same step of the one-run study in OUT")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1986],
                        help="fine-tuning seeds (default: the yamls' own)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "scaling")
    parser.add_argument("--pretrain_yaml", default="wav2vec2_tiny.yaml")
    parser.add_argument("--pretrain_run_opts", default="",
                        help="options of the pretraining run, one string: '--device=cuda:0'")
    parser.add_argument("--jobs", type=int, default=1, help="fine-tuning runs at the same time")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    add_executor_options(parser, sep="-")
    parser.add_argument("--report-only", action="store_true",
                        help="the report from the runs there are, nothing run")
    args = parser.parse_args(argv)
    if args.against_one_run and not args.per_length:
        parser.error("--against-one-run compares one run per length with one run: "
                     "add --one-run-per-length")
    args.overrides = overrides
    return args


def main(argv=None):
    """Pretrain, fine-tune, report; 0 when every run finished."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(args.steps, args.seeds, args.out, args.overrides, args.per_length)
    if not args.report_only:
        launcher = launcher_for(args, args.threads)
        pretrain(args, launcher)
        fine_tune(jobs, args.jobs, args.threads, launcher)
    print(write_report(args.out, args.steps, args.seeds, args.per_length))
    if args.against_one_run:
        print(schedule_report(args.against_one_run, args.out, args.steps, args.seeds))
    print(f"tables and plot in {args.out}")
    return 0 if all(finished_results(j.folder) for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
