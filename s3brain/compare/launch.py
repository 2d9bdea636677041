"""Launching the runs of a comparison: which yamls need an earlier run (a weight fine-tuning run
to start from, a SALAD detector), the overrides each gets, the backbone each asks for, and the
launchers (a subprocess here, a Slurm job through submitit).
"""

import os
import subprocess
import sys
from pathlib import Path

from s3brain.backbone.wrapper import default_backbone
from s3brain.compare.collect import (
    BASELINE,
    CONTINUED,
    DETECTOR,
    detector_results,
    finished_results,
)


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
        said = _error_line(folder / log_name)
        return None, (f"failed: {said}" if said else
                      f"failed (exit {code}, see {folder / log_name})")
    return done, "ok"


def _error_line(log):
    r"""The last one-line error (``ERROR: ...``) a run printed in ``log``, or None.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     log = Path(tmp) / "run.log"
    ...     _ = log.write_text("loading\nERROR: --sparsty=0.1: no key 'sparsty'\n")
    ...     _error_line(log), _error_line(Path(tmp) / "none.log")
    ("--sparsty=0.1: no key 'sparsty'", None)
    """
    try:
        lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    errors = [line[len("ERROR: "):] for line in lines if line.startswith("ERROR: ")]
    return errors[-1] if errors else None


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
