"""Run, or collect when already done, several strategies of one recipe on the same data and
backbone, and write one comparison table (Markdown and CSV) and plots (PNG).

    python -m s3brain.compare recipes/LibriSpeech hparams/weight_ft.yaml hparams/s3router.yaml
    python -m s3brain.compare recipes/LibriSpeech --all -- --train_splits='["train-1h"]'
    python -m s3brain.compare recipes/LibriSpeech --all --seeds 1986 1987 1988 --jobs 2
    python -m s3brain.compare recipes/CommonVoice --all -- --language=de
    python -m s3brain.compare recipes/SUPERB/KS --all

Each strategy runs as ``<recipe>/train.py <yaml> --output_folder=<out>/<yaml stem>`` plus the
overrides after ``--``. Every recipe writes the same ``results.json`` format
(``s3brain.report``): the table shows its test metrics (``metric_keys``) and its cost, and the
plots its ``primary_metric`` (WER, PER or accuracy). A run whose ``results.json`` holds its
primary metric is reused, not rerun, unless it started from another backbone than the command
asks for (its recorded ``ssl_hub`` against ``--ssl_hub`` or the yaml's): that row fails with one
line saying so, rather than mixing backbones in one table; a run
that fails becomes a row saying so. A yaml with an ``init_from`` key (the pruning strategies)
starts from this comparison's weight fine-tuning run, which then runs first; the fair dense
reference of such rows, the same extra epochs without the strategy
(``hparams/weight_ft_continued.yaml``, where the recipe has it), is run with them. A yaml with a
``salad_detector`` key (SALAD, S6-DAMON) gets a detector trained for this comparison by the
recipe's ``train_salad.py hparams/salad/detector.yaml`` with the weight fine-tuning run as its
teacher (once per seed, in ``<out>/salad_detector``).

With ``--seeds`` every strategy runs once per seed (``--seed=S``, in ``<out>/seed<S>/``) and the
table gives each metric as mean +- std over the seeds and, for each row against the reference
row (``--reference``, weight fine-tuning by default), the paired bootstrap 95 % interval of the
error-rate difference (WER, PER) over the test utterances, pooled over seeds (``s3brain.stats``), and
the t interval of the same difference over the seeds' values (``s_`` columns: training noise
counted, as the utterance bootstrap cannot); a ``*`` marks an interval that excludes 0. With the default reference, rows that start from the weight
fine-tuning run are compared with its continuation instead (the ``reference`` column says which).
The plots get error bars.

Example
-------
>>> rows = [{"name": "weight_ft", "status": "ok", "wer_test_clean": 80.0, "flops_10s": 2.8e9,
...          "sparsity": 0.0},
...         {"name": "s3router", "status": "failed (exit 1)", "wer_test_clean": None}]
>>> print(markdown_table(rows, ["name", "status", "wer_test_clean", "flops_10s"]))
| name | status | wer_test_clean | flops_10s |
| --- | --- | --- | --- |
| weight_ft | ok | 80.0 | 2.80 G |
| s3router | failed (exit 1) |  |  |
"""

import argparse
import concurrent.futures
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

#: The columns of results written before ``metric_keys`` existed (LibriSpeech's).
COLUMNS = ["name", "status", "strategy", "train_split", "sparsity", "kept_share_test_clean",
           "mean_exit_block_test_clean", "wer_test_clean",
           "wer_test_other", "wer_test_clean_lm", "wer_test_other_lm", "params_total",
           "params_trainable", "flops_10s", "latency_ms_10s", "rtf", "onnx_latency_ms_10s",
           "peak_memory_mb_10s", "storage_bytes_per_task", "train_seconds"]
BASELINE = "weight_ft.yaml"
#: The fair dense reference of the yamls that start from ``BASELINE``'s run: its weights trained
#: for the same extra epochs, with the same rates and schedule, without the strategy.
CONTINUED = "weight_ft_continued.yaml"
#: The script and yaml (in the recipe) that train a SALAD detector, for yamls that need one.
DETECTOR = ("train_salad.py", "salad/detector.yaml")
#: Result keys that describe where a run was trained (shown when the runs have them).
WHERE = ("task", "language", "train_split")


def primary_metric(results):
    """The metric a run is ranked and plotted by (its ``primary_metric``; WER on test-clean for
    results written before the key existed).

    Arguments
    ---------
    results : dict
        A run's ``results.json``.

    Returns
    -------
    str

    Example
    -------
    >>> primary_metric({"primary_metric": "accuracy_test"}), primary_metric({})
    ('accuracy_test', 'wer_test_clean')
    """
    return results.get("primary_metric") or "wer_test_clean"


def finished_results(folder):
    """The run's results.json if it finished (its primary test metric present), else None.

    Arguments
    ---------
    folder : str or Path
        The run's output folder.

    Returns
    -------
    dict or None
    """
    path = Path(folder) / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if results.get(primary_metric(results)) is not None else None


def requested_backbone(yaml_path, overrides):
    r"""The backbone a run of ``yaml_path`` with ``overrides`` starts from: ``--ssl_hub``, else the
    yaml's ``ssl_hub`` (the project's default backbone where the yaml calls
    ``default_backbone``); None when the yaml has no ``ssl_hub`` or builds it otherwise (another
    tag: not known without loading the yaml, so not checked).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    ...     _ = f.write("ssl_hub: facebook/wav2vec2-base  # the hub\n"); f.flush()
    ...     requested_backbone(f.name, []), requested_backbone(f.name, ["--ssl_hub=/m", "--x=1"])
    ('facebook/wav2vec2-base', '/m')
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    ...     _ = f.write("ssl_hub: !ref <data>/model\n"); f.flush()
    ...     print(requested_backbone(f.name, []))
    None
    """
    from s3brain.backbone import default_backbone

    for override in overrides:
        if override.startswith("--ssl_hub="):
            return override.split("=", 1)[1]
    path = Path(yaml_path)
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("ssl_hub:"):
            value = line.split(":", 1)[1].split(" #")[0].strip()
            if "default_backbone" in value:
                return default_backbone()
            return None if value.startswith("!") else value
    return None


def same_backbone(a, b):
    """Whether two ``ssl_hub`` values name one backbone (local folders compared resolved).

    Example
    -------
    >>> same_backbone(".", str(Path.cwd())), same_backbone("a/b", "a/c")
    (True, False)
    """
    if a == b:
        return True
    return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()


def columns_for(rows):
    """The table's columns for the runs of any task, from their results: name and status,
    where trained, sparsity, every test metric (``metric_keys``), then parameters and the cost
    on the measured audio length (``cost_seconds``), storage per task and training time.

    Arguments
    ---------
    rows : list of dict
        Table rows (``row_for``).

    Returns
    -------
    list of str

    Example
    -------
    >>> columns_for([{"task": "KS", "metric_keys": ["accuracy_test"], "cost_seconds": 1}])[:6]
    ['name', 'status', 'strategy', 'task', 'sparsity', 'accuracy_test']
    """
    if not any(r.get("metric_keys") for r in rows):
        return list(COLUMNS)  # results written before the format had metric_keys
    metrics = dict.fromkeys(k for r in rows for k in r.get("metric_keys") or ()
                            if not k.startswith("exit_rtf"))
    seconds = next((r["cost_seconds"] for r in rows if r.get("cost_seconds")), 10)
    cost = [f"{k}_{seconds:g}s" for k in ("flops", "latency_ms")] + ["rtf"] + [
        f"{k}_{seconds:g}s" for k in ("onnx_latency_ms", "peak_memory_mb")]
    if any(r.get(f"latency_ms_{seconds:g}s_int8") is not None for r in rows):
        cost += [f"latency_ms_{seconds:g}s_int8", "rtf_int8"]  # the int8 deployment beside
    where = [k for k in WHERE if any(r.get(k) is not None for r in rows)]
    return ["name", "status", "strategy", *where, "sparsity", *metrics, "params_total",
            "params_trainable", *cost, "storage_bytes_per_task", "train_seconds"]


def top_level_keys(yaml_path):
    r"""The keys a hparams file sets at its top level (those a command line can override).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    ...     _ = f.write("seed: 1\n# note: no\nmodel:\n    depth: 2\n")
    ...     f.flush()
    ...     sorted(top_level_keys(f.name))
    ['model', 'seed']
    """
    return {line.split(":", 1)[0] for line in Path(yaml_path).read_text().splitlines()
            if ":" in line and not line[0].isspace() and not line.startswith("#")}


def needs_baseline(yaml_path):
    """Whether the yaml starts from a weight fine-tuning run (has a top-level ``init_from``)."""
    return "init_from" in top_level_keys(yaml_path)


def needs_detector(yaml_path):
    """Whether the yaml drops tokens with a trained SALAD detector (a ``salad_detector`` key)."""
    return "salad_detector" in top_level_keys(yaml_path)


def overrides_for(yaml_path, overrides):
    r"""The command-line overrides that apply to ``yaml_path``: those of its top-level keys and
    SpeechBrain's run options (``--device``); a comparison's overrides meant for the strategies'
    yamls (``--lm_weight``) are left out of a helper run whose yaml lacks the key (the detector).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    ...     _ = f.write("seed: 1\nsynthetic_size: default\n")
    ...     f.flush()
    ...     overrides_for(f.name, ["--seed=2", "--lm_weight=0.5", "--device=cuda:0"])
    ['--seed=2', '--device=cuda:0']
    """
    from speechbrain.utils.run_opts import RunOptions

    keys = top_level_keys(yaml_path) | set(RunOptions().as_dict())
    return [o for o in overrides
            if not o.startswith("--") or o[2:].split("=", 1)[0].replace("-", "_") in keys]


def fair_reference(recipe, yaml, reference=BASELINE, yamls=()):
    """The row ``yaml``'s intervals are computed against: ``reference``, except that with the
    default one a yaml that starts from the weight fine-tuning run is compared with its
    continuation (``CONTINUED``) when that is among ``yamls``: the same extra epochs without the
    strategy, so the difference is the strategy's and not the extra training's.

    Arguments
    ---------
    recipe : Path
        The recipe folder.
    yaml : str
        The yaml's name.
    reference : str
        The comparison's reference yaml.
    yamls : list of str
        The yamls compared.

    Returns
    -------
    str
        The reference's stem.
    """
    names = [Path(y).name for y in yamls]
    if (Path(reference).name == BASELINE and CONTINUED in names and yaml != CONTINUED
            and needs_baseline(Path(recipe) / "hparams" / yaml)):
        return Path(CONTINUED).stem
    return Path(reference).stem


class SubprocessLauncher:
    """Runs a recipe command here, as a child process (the default)."""

    def run(self, cmd, env, log_path):
        """Run ``cmd`` with ``env``, its output to ``log_path``; its exit status."""
        with open(log_path, "w") as log:
            return subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


class SubmititLauncher:
    """Hands each recipe command to a job scheduler through submitit: its Slurm executor on a
    cluster (``cluster="slurm"``, with ``slurm_partition`` and the like as ``parameters``), or
    its local executor (``cluster="local"``: jobs as processes here, the same code path).

    Arguments
    ---------
    folder : str or Path
        Where submitit keeps its job files and logs.
    cluster : str
        ``"slurm"`` or ``"local"``.
    **parameters
        ``executor.update_parameters`` keywords (``timeout_min``, ``slurm_partition``...).
    """

    def __init__(self, folder, cluster="slurm", **parameters):
        try:
            import submitit
        except ImportError as err:
            raise RuntimeError("the submitit launcher needs submitit: pip install submitit") \
                from err
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})

    def run(self, cmd, env, log_path):
        """Submit ``cmd`` as one job, wait for it; its output to ``log_path``; its exit status
        (1 when the job failed)."""
        from submitit.core.utils import FailedJobError
        from submitit.helpers import CommandFunction

        job = self.executor.submit(CommandFunction(cmd, verbose=False, env=env))
        try:
            output, code = job.result(), 0
        except FailedJobError as err:
            output, code = str(err), 1
        Path(log_path).write_text(f"submitit job {job.job_id}\n{output}")
        return code


def add_executor_options(parser, sep="_"):
    """``--executor``, ``--slurm<sep>partition`` and ``--timeout<sep>min`` on ``parser``: where
    the runs go (``launcher_for``).

    Arguments
    ---------
    parser : argparse.ArgumentParser
        The command line.
    sep : str
        ``_`` (this module's options) or ``-`` (the benchmark scripts').
    """
    parser.add_argument("--executor", choices=["subprocess", "local", "slurm"],
                        default="subprocess",
                        help="run here (subprocess), or hand each run to submitit's local or "
                             "Slurm executor (--jobs runs are then in flight at once)")
    parser.add_argument(f"--slurm{sep}partition", dest="slurm_partition", default=None)
    parser.add_argument(f"--timeout{sep}min", dest="timeout_min", type=int, default=None,
                        help="per run, for submitit")


def launcher_for(args, cpus_per_task=None):
    """The ``SubmititLauncher`` that ``add_executor_options``' options ask for (its files in
    ``args.out / "submitit"``), or None to run here.

    Arguments
    ---------
    args : argparse.Namespace
        With ``executor``, ``slurm_partition``, ``timeout_min`` and ``out``.
    cpus_per_task : int, optional
        CPUs per run.

    Returns
    -------
    SubmititLauncher or None

    Example
    -------
    >>> from types import SimpleNamespace
    >>> launcher_for(SimpleNamespace(executor="subprocess")) is None
    True
    """
    if args.executor == "subprocess":
        return None
    return SubmititLauncher(Path(args.out) / "submitit", args.executor,
                            timeout_min=args.timeout_min, slurm_partition=args.slurm_partition,
                            cpus_per_task=cpus_per_task)


def run_strategy(recipe, yaml, folder, overrides=(), threads=None, log_name="compare.log",
                 launcher=None, script="train.py", finished=finished_results):
    """Run one strategy unless finished; return ``(results or None, status)``.

    Arguments
    ---------
    recipe : str or Path
        The recipe folder (``train.py`` and ``hparams/``).
    yaml : str
        The hparams file's name.
    folder : str or Path
        The run's output folder.
    overrides : list of str
        Command-line overrides of the yaml.
    threads : int, optional
        CPU threads of the run.
    log_name : str
        The run's log, in ``folder``.
    launcher : SubprocessLauncher or SubmititLauncher, optional
        How the command is run (default: a child process here).
    script : str
        The recipe's script that runs the yaml.
    finished : callable
        ``folder -> results or None``: whether a run there finished (``finished_results``).

    Returns
    -------
    tuple
        The run's ``results.json`` (None if it failed) and a status line.
    """
    done = finished(folder)
    if done:
        recorded = done.get("ssl_hub")
        requested = requested_backbone(Path(recipe) / "hparams" / yaml, overrides)
        if recorded and requested and not same_backbone(recorded, requested):
            return None, (f"failed: {folder} was trained from {recorded}, not {requested}: "
                          f"give another --out, or --ssl_hub={recorded} to reuse it")
        return done, "ok (reused)"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(recipe) / script), str(Path(recipe) / "hparams" / yaml),
           f"--output_folder={folder}", *overrides]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    code = (launcher or SubprocessLauncher()).run(cmd, env, folder / log_name)
    done = finished(folder)
    if code != 0 or not done:
        return None, f"failed (exit {code}, see {folder / log_name})"
    return done, "ok"


def row_for(name, results, status):
    """One table row: a run's results, with its name and status.

    Arguments
    ---------
    name : str
        The strategy's name (its yaml's stem).
    results : dict or None
        The run's ``results.json``; None for a run that failed.
    status : str
        ``ok``, ``ok (reused)`` or why the run failed.

    Returns
    -------
    row : dict
        The results' keys, and every key of ``COLUMNS`` (None where the results lack it).

    Example
    -------
    >>> row = row_for("s3router", {"wer_test_clean": 75.5, "accuracy_test": 1}, "ok")
    >>> row["name"], row["wer_test_clean"], row["flops_10s"], row["accuracy_test"]
    ('s3router', 75.5, None, 1)
    """
    row = {key: None for key in COLUMNS}
    row.update(results or {})
    row.update(name=name, status=status)
    return row


def markdown_table(rows, columns=COLUMNS):
    """A Markdown table of ``rows`` with one column per key in ``columns``.

    Large counts (FLOPs, parameters, bytes) are written with a k, M or G suffix; missing
    values are left empty. See the module's example.

    Arguments
    ---------
    rows : list of dict
        The rows, as ``row_for`` makes them.
    columns : list of str
        The keys to show, in order.

    Returns
    -------
    table : str
        The table, one line per row after the header and separator lines.
    """

    def cell(value):
        """One value as table text."""
        if value is None:
            return ""
        if isinstance(value, dict):  # a bootstrap interval (s3brain.stats.paired_bootstrap)
            return interval_text(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for least, size, prefix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
                if abs(value) >= least:  # counts: FLOPs, parameters, bytes
                    return f"{value / size:.2f} {prefix}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    def shown(row, column):
        """A cell, with ``+- std`` when the row has the column's spread over seeds (metrics;
        counts such as FLOPs and parameters are the same for every seed)."""
        value, std = row.get(column), row.get(f"{column}_std")
        if std is None or not isinstance(value, float) or abs(value) >= 1e4:
            return cell(value)
        return f"{value:.4g} ± {std:.2g}"

    lines += ["| " + " | ".join(shown(row, c) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def interval_text(interval):
    """``+d.dd [+l.ll, +h.hh]`` for a ``paired_bootstrap`` result, `` *`` when it excludes 0.

    Arguments
    ---------
    interval : dict
        ``difference``, ``low``, ``high``, ``excludes_zero``.

    Returns
    -------
    str
        The interval as table text.

    Example
    -------
    >>> interval_text({"difference": -1.5, "low": -2.25, "high": -0.5, "excludes_zero": True})
    '-1.50 [-2.25, -0.50] *'
    """
    mark = " *" if interval["excludes_zero"] else ""
    return (f"{interval['difference']:+.2f} [{interval['low']:+.2f}, {interval['high']:+.2f}]"
            f"{mark}")


def write_tables(rows, out, stem="comparison", columns=None):
    """``<stem>.md`` (``columns``, default ``columns_for(rows)``) and ``<stem>.csv`` (every
    column) in ``out``.

    Arguments
    ---------
    rows : list of dict
        The rows.
    out : str or Path
        The folder.
    stem : str
        The files' name.
    columns : list of str, optional
        The Markdown table's columns.

    Returns
    -------
    tuple
        The two paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = columns or columns_for(rows)
    md, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
    md.write_text(markdown_table(rows, columns) + "\n")
    extra = [k for k in dict.fromkeys(k for r in rows for k in r)
             if k not in columns and k != "metric_keys"]
    with open(csv_path, "w", newline="") as f:  # seeds: the stds and intervals after the table's
        writer = csv.DictWriter(f, list(columns) + extra, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: interval_text(v) if isinstance(v, dict) else v
                          for k, v in r.items()} for r in rows)
    return md, csv_path


def plot(rows, path, x=None, xlabel=None, scale=1e-9):
    """The primary metric (``wer_test_clean``, ``per_test``, ``accuracy_test``) of every
    finished row against ``x`` (default: FLOPs on the measured audio length): one point per row,
    told apart by colour and marker in a legend (many strategies share the dense model's FLOPs),
    error bars when the rows have a spread over seeds.

    Arguments
    ---------
    rows : list of dict
        The rows.
    path : str or Path
        The PNG file.
    x : str, optional
        The key on the x axis.
    xlabel : str, optional
        Its label.
    scale : float
        Factor applied to ``x``.

    Returns
    -------
    str or Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("primary_metric") or r.get("wer_test_clean") is not None]
    y = primary_metric(done[0]) if done else "wer_test_clean"
    if x is None:
        seconds = next((r["cost_seconds"] for r in rows if r.get("cost_seconds")), 10)
        x, xlabel = f"flops_{seconds:g}s", f"GFLOPs for {seconds:g} s of audio"
    points = [r for r in rows if r.get(y) is not None and r.get(x) is not None]
    colours = plt.get_cmap("tab20").colors
    markers = "os^Dv<>PX*ph"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, r in enumerate(points):
        ax.errorbar(r[x] * scale, r[y], yerr=r.get(f"{y}_std"),
                    color=colours[i % len(colours)], marker=markers[i % len(markers)],
                    markersize=6, capsize=3, linestyle="none", label=r["name"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{y} %" + (" (greedy)" if y.startswith(("wer", "per")) else ""))
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(rows, out):
    """The primary metric against FLOPs and against sparsity, named after the metric
    (``wer_vs_flops.png``, ``per_vs_sparsity.png``, ``accuracy_vs_flops.png``).

    Arguments
    ---------
    rows : list of dict
        The rows.
    out : Path
        The folder.

    Returns
    -------
    list of Path
    """
    done = [r for r in rows if r.get("primary_metric")]
    name = primary_metric(done[0] if done else {}).split("_")[0]
    return [plot(rows, out / f"{name}_vs_flops.png"),
            plot(rows, out / f"{name}_vs_sparsity.png", x="sparsity", xlabel="sparsity",
                 scale=1.0)]


def compare(recipe, yamls, out, overrides=(), threads=None, jobs=1, columns=None,
            launcher=None):
    """Run or collect each yaml of ``recipe``, ``jobs`` runs at a time (the weight fine-tuning
    run first and alone when others start from it); write the tables and plots; return the rows
    in the order of ``yamls``."""
    recipe, out = Path(recipe), Path(out)
    yamls = with_references(recipe, yamls)
    if threads is None and jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    progress = tqdm(total=len(yamls), desc="strategies", unit="run")

    def one(yaml):
        """Run or collect one yaml's strategy; its table row."""
        name = Path(yaml).stem
        extra = list(overrides)
        if needs_baseline(recipe / "hparams" / yaml):
            extra.append(f"--init_from={out / Path(BASELINE).stem}")
        start = time.time()
        results, status = None, None
        if needs_detector(recipe / "hparams" / yaml):
            with detector_lock:  # one detector per comparison, trained by the first that needs it
                detector, status = train_detector(recipe, out, overrides, threads, launcher)
            extra.append(f"--salad_detector={detector}")
            if not status.startswith("ok"):
                status = f"failed (SALAD detector: {status})"
        if status is None or status.startswith("ok"):
            results, status = run_strategy(recipe, yaml, out / name, extra, threads,
                                           launcher=launcher)
        row = row_for(name, results, status)
        progress.update()
        metric = primary_metric(row)
        tqdm.write(f"{name}: {status}, {metric} {row.get(metric)} "
                   f"({(time.time() - start) / 60:.1f} min)")
        return row

    detector_lock = threading.Lock()
    rows = {}
    rest = list(yamls)
    if rest and rest[0] == BASELINE:
        rows[BASELINE] = one(rest.pop(0))
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        rows.update(zip(rest, pool.map(one, rest)))
    progress.close()
    rows = [rows[y] for y in yamls]
    write_tables(rows, out, columns=columns)
    plot_all(rows, out)
    return rows


def with_references(recipe, yamls):
    r"""``yamls`` (names) with what they need: the weight fine-tuning yaml first when any starts
    from its run or needs a SALAD detector (its run is the teacher), and its continuation
    (``CONTINUED``, the fair reference of the rows that start from it) when the recipe has one.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     hparams = Path(tmp) / "hparams"
    ...     hparams.mkdir()
    ...     for name in ("safari", "lora", "weight_ft_continued"):
    ...         _ = (hparams / f"{name}.yaml").write_text(
    ...             "init_from: x\n" if name != "lora" else "seed: 1\n")
    ...     _ = (hparams / "salad.yaml").write_text("salad_detector: x\n")
    ...     print(with_references(tmp, ["safari.yaml", "lora.yaml"]))
    ...     print(with_references(tmp, ["salad.yaml"]))
    ['weight_ft.yaml', 'safari.yaml', 'lora.yaml', 'weight_ft_continued.yaml']
    ['weight_ft.yaml', 'salad.yaml']
    """
    hparams = Path(recipe) / "hparams"
    yamls = [Path(y).name for y in yamls]
    from_baseline = any(needs_baseline(hparams / y) for y in yamls)
    if (from_baseline or any(needs_detector(hparams / y) for y in yamls)) \
            and BASELINE not in yamls:
        yamls.insert(0, BASELINE)  # the runs start from it, or the detector's teacher is it
    if from_baseline and (hparams / CONTINUED).is_file() and CONTINUED not in yamls:
        yamls.append(CONTINUED)
    yamls.sort(key=lambda y: y != BASELINE)  # the baseline first: others may start from it
    return yamls


def train_detector(recipe, out, overrides=(), threads=None, launcher=None):
    """Train (or reuse) the SALAD detector of a comparison, the weight fine-tuning run its
    teacher: ``<recipe>/train_salad.py hparams/salad/detector.yaml`` in ``out/salad_detector``,
    with the comparison's overrides that the detector's yaml has (``overrides_for``).

    Arguments
    ---------
    recipe : Path
        The recipe folder.
    out : Path
        The comparison's folder (one seed's).
    overrides : list of str
        The comparison's overrides.
    threads : int, optional
        CPU threads of the run.
    launcher : SubprocessLauncher or SubmititLauncher, optional
        How the command is run.

    Returns
    -------
    tuple
        The detector's folder and a status line (``ok``, ``ok (reused)`` or why it failed).
    """
    script, yaml = DETECTOR
    folder = Path(out) / "salad_detector"
    if not (Path(recipe) / script).is_file():
        return folder, f"failed ({Path(recipe) / script} missing)"
    extra = [*overrides_for(Path(recipe) / "hparams" / yaml, overrides),
             f"--teacher_from={Path(out) / Path(BASELINE).stem}"]
    _, status = run_strategy(recipe, yaml, folder, extra, threads, launcher=launcher,
                             script=script, finished=detector_results)
    return folder, status


def detector_results(folder):
    """A detector run's results.json if it finished (its detector file written too), else None."""
    path = Path(folder) / "results.json"
    if not (path.is_file() and (Path(folder) / "salad_detector.pt").is_file()):
        return None
    return json.loads(path.read_text())


def error_files(folder, metric, lm=False):
    """The per-utterance error files of a run for its primary metric's kind (SpeechBrain's
    ``ErrorRateStats.write_stats``: ``wer_test-clean.txt``, ``per_test.txt``), by split; the LM
    decoding's (``wer_lm_test-clean.txt``, as split ``lm_test-clean``) with ``lm``.

    Arguments
    ---------
    folder : Path
        The run's folder.
    metric : str
        Its primary metric (``wer_test_clean``).
    lm : bool
        Include the LM decoding's files.

    Returns
    -------
    dict
        ``{split: path}``.
    """
    prefix = metric.split("_")[0]
    return {p.stem[len(prefix) + 1:]: p for p in sorted(Path(folder).glob(f"{prefix}_*.txt"))
            if lm or not p.stem.startswith(f"{prefix}_lm_")}


def pooled_over_seeds(per_seed, out, reference=BASELINE, splits=None, folder_of=None):
    """One row per strategy from its runs over several seeds.

    Arguments
    ---------
    per_seed : dict
        ``{seed: rows}`` as ``compare`` returns them for each seed (same strategies).
    out : Path
        The comparison folder: seed ``s``'s run of strategy ``name`` is ``out/seed<s>/<name>``,
        holding its per-utterance error files (``wer_<split>.txt``, ``per_test.txt``).
    reference : str or dict
        The yaml (or its stem) every row is compared with, or ``{name: reference}`` per row
        (``BASELINE`` for a name it lacks; ``fair_reference``).
    splits : tuple of str, optional
        Test splits to compare (default: every split with an error file in the reference run,
        the LM decoding's too: ``lm_test-clean`` gives ``d_wer_lm_test_clean``).
    folder_of : callable, optional
        ``(seed, name) -> folder`` of a run, for another layout than ``out/seed<s>/<name>``
        (the sweeps keep the yamls' own seed in the folder a run without seeds has).

    Returns
    -------
    list of dict
        Numeric columns: the mean over the seeds that finished, with ``<column>_std``;
        ``status``: how many seeds finished; ``d_<metric>_<split>`` (``d_wer_test_clean``): the
        paired bootstrap interval of the error-rate difference against the reference (None for
        the reference itself; absent for tasks without per-utterance error files);
        ``s_<metric>_<split>``: the t interval of the same difference from each seed's value
        (``seed_interval``, two seeds or more: training noise counted); ``reference``: the row
        it is compared with.
    """
    from s3brain.stats import mean_std, paired_differences

    seeds = list(per_seed)
    references = {Path(k).stem: Path(v).stem for k, v in reference.items()} \
        if isinstance(reference, dict) else {}
    default = Path(BASELINE if isinstance(reference, dict) else reference).stem
    if folder_of is None:
        def folder_of(seed, name):
            """``out/seed<s>/<name>``: where ``compare_seeds`` puts a run."""
            return Path(out) / f"seed{seed}" / name
    rows = []
    for index, first in enumerate(per_seed[seeds[0]]):
        name = first["name"]
        runs = [per_seed[s][index] for s in seeds]
        ok = [(s, r) for s, r in zip(seeds, runs) if r["status"].startswith("ok")]
        row = {key: first.get(key) for key in ("name", "strategy", "primary_metric",
                                               "metric_keys", "cost_seconds", *WHERE)}
        row["status"] = f"{len(ok)}/{len(seeds)} seeds ok"
        for key in dict.fromkeys(k for _, r in ok for k in r):
            values = [r[key] for _, r in ok if isinstance(r.get(key), (int, float))
                      and not isinstance(r.get(key), bool)]
            if key not in row and values and len(values) == len(ok):
                row[key], row[f"{key}_std"] = mean_std(values)
        metric = primary_metric(first)
        prefix = metric.split("_")[0]
        reference = references.get(name, default)
        row["reference"] = reference if name != reference else None
        seed0 = folder_of(seeds[0], reference)
        for split in splits or error_files(seed0, metric, lm=True):
            tag = f"{prefix}_{split.replace('-', '_')}"
            row[f"d_{tag}"] = row[f"s_{tag}"] = None
            files = [(folder_of(s, reference) / f"{prefix}_{split}.txt",
                      folder_of(s, name) / f"{prefix}_{split}.txt") for s, _ in ok]
            result = paired_differences(files) if name != reference else None
            if result:
                row[f"d_{tag}"], row[f"s_{tag}"] = result["bootstrap"], result["seeds"]
        rows.append(row)
    return rows


def compare_seeds(recipe, yamls, out, seeds, reference=BASELINE, overrides=(), threads=None,
                  jobs=1, columns=None, launcher=None):
    """``compare`` once per seed (``--seed=<s>``, in ``out/seed<s>``), then the rows pooled over
    the seeds (``pooled_over_seeds``): tables and plots with error bars in ``out``.

    Returns
    -------
    list of dict
        The pooled rows.
    """
    out = Path(out)
    yamls = list(yamls)
    if Path(reference).name not in [Path(y).name for y in yamls]:
        yamls.insert(0, Path(reference).name)
    yamls = with_references(recipe, yamls)
    per_seed = {s: compare(recipe, yamls, out / f"seed{s}", [*overrides, f"--seed={s}"],
                           threads, jobs, columns, launcher) for s in seeds}
    references = {Path(y).stem: fair_reference(recipe, y, reference, yamls) for y in yamls}
    rows = pooled_over_seeds(per_seed, out, references)
    intervals = [c for c in dict.fromkeys(k for r in rows for k in r)
                 if c.startswith(("d_", "s_")) and any(r.get(c) for r in rows)]
    columns = [*(columns or columns_for(rows)), *(["reference"] if intervals else []),
               *intervals]
    write_tables(rows, out, columns=columns)
    plot_all(rows, out)
    return rows, columns


def main(argv=None):
    """Command line of ``python -m s3brain.compare`` (see the module's docstring).

    Arguments
    ---------
    argv : list of str, optional
        ``<recipe> [yamls ...] [--all] [--out ...] [--threads N] [--jobs N] [--columns ...]``,
        then ``--`` and overrides passed to every run; ``sys.argv[1:]`` when None.

    Returns
    -------
    exit_code : int
        0 when every strategy ran (or was reused), 1 otherwise.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m s3brain.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path, help="recipe folder (holds train.py and hparams/)")
    parser.add_argument("yamls", nargs="*", help="hparams files (names or paths)")
    parser.add_argument("--all", action="store_true", help="every yaml in <recipe>/hparams")
    parser.add_argument("--out", type=Path, default=Path("results") / "compare")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per run (default: all, or the cores shared by --jobs)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="run every strategy once per seed; mean +- std and paired "
                             "bootstrap intervals against --reference")
    parser.add_argument("--reference", default=BASELINE,
                        help=f"the row the intervals compare with (default: {BASELINE})")
    add_executor_options(parser)
    parser.add_argument("--columns", nargs="+", default=None, metavar="KEY",
                        help="result keys shown in the Markdown table (the CSV has all of "
                             "them; default: the runs' metrics and cost, see columns_for)")
    args = parser.parse_args(argv)
    if not (args.recipe / "train.py").is_file():
        parser.error(f"{args.recipe} has no train.py")
    yamls = sorted(p.name for p in (args.recipe / "hparams").glob("*.yaml")) if args.all \
        else args.yamls
    if not yamls:
        parser.error("give hparams files or --all")
    missing = [y for y in yamls if not (args.recipe / "hparams" / Path(y).name).is_file()]
    if missing:
        parser.error(f"not in {args.recipe / 'hparams'}: {missing}")
    launcher = launcher_for(args, args.threads)
    if args.seeds:
        rows, columns = compare_seeds(args.recipe, yamls, args.out, args.seeds, args.reference,
                                      overrides, args.threads, args.jobs, args.columns,
                                      launcher)
        print(markdown_table(rows, columns))
        print(f"+- : std over seeds {args.seeds}; d_<metric>: error-rate difference against "
              "the row's reference, paired bootstrap 95 % interval over the test "
              "utterances of every seed; s_<metric>: t interval over the seeds' differences "
              "(training noise counted); * = excludes 0")
        print(f"tables and plots in {args.out}")
        return 0 if all(r["status"].startswith(f"{len(args.seeds)}/") for r in rows) else 1
    rows = compare(args.recipe, yamls, args.out, overrides, args.threads, args.jobs,
                   args.columns, launcher)
    print(markdown_table(rows, args.columns or columns_for(rows)))
    print(f"tables and plots in {args.out}")
    return 0 if all(r["status"].startswith("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
