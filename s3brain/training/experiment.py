"""The plumbing of a run, shared by every recipe: the command line and experiment folder, the
one-line error for bad input before training, the strategies set up on the backbone and their
modules registered, and loading the best checkpoint of an earlier run.

A recipe's ``train.py`` reads like SpeechBrain's: it builds its own Brain with
``hparams["modules"]``, ``hparams["checkpointer"]`` and its data loaders, and calls these in
between::

    with setup_errors():
        hparams, run_opts = start_experiment(sys.argv[1:], RECIPE_DIR)
        manifests = prepare(hparams)
        setup_strategies(hparams["strategies"], hparams)
    ...
    asr = ASR(modules=hparams["modules"], ...)

Example
-------
>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as d:
...     _ = (pathlib.Path(d) / "hparams").mkdir()
...     _ = (pathlib.Path(d) / "hparams" / "x.yaml").write_text("a: 1")
...     resolve_hparams_path("hparams/x.yaml", d).endswith("x.yaml")
True
"""

import contextlib
import difflib
import inspect
import logging
import shutil
import sys
from pathlib import Path

import ruamel.yaml
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process

from s3brain.backbone.wrapper import BackboneUnavailableError
from s3brain.strategies.base import setup_strategies as _setup_each
from s3brain.strategies.base import strategy_modules

logger = logging.getLogger(__name__)


#: The errors that mean bad input (no backbone, missing data, wrong ``init_from``, bad keys):
#: reported in one line before training, not as a traceback.
SETUP_ERRORS = (BackboneUnavailableError, FileNotFoundError, ValueError)


@contextlib.contextmanager
def setup_errors():
    """Turn a bad-input error raised inside the block into one line on stderr and exit status 2.

    Returns
    -------
    contextlib.AbstractContextManager
        Wraps the set-up part of a recipe (before training starts).

    Example
    -------
    >>> import io, contextlib
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     try:
    ...         with setup_errors():
    ...             raise FileNotFoundError("no data in /nowhere")
    ...     except SystemExit as exit:
    ...         code = exit.code
    >>> code, err.getvalue().strip()
    (2, 'ERROR: no data in /nowhere')
    """
    try:
        yield
    except SETUP_ERRORS as err:
        print(f"ERROR: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def resolve_hparams_path(path, recipe_dir):
    """The hparams file, relative to the current directory or to the recipe folder.

    Arguments
    ---------
    path : str
        The path given on the command line.
    recipe_dir : str or Path
        The recipe's folder (where ``hparams/`` is).

    Returns
    -------
    str
        A path that exists.
    """
    for candidate in (Path(path), Path(recipe_dir) / path):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"hparams file {path} not found in {Path.cwd()} nor in {recipe_dir}")


def check_overrides(hparams_file, overrides, argv=(), shown_as=None):
    r"""Refuse overrides that name no top-level key of the yaml, in one line that names each and
    the closest existing key, before anything in the yaml is built.

    hyperpyyaml refuses them too, but only inside ``load_hyperpyyaml``, with a ``KeyError``
    listing every key. Only top-level keys must match (hyperpyyaml merges the inside of a
    mapping freely), and the keys are read as hyperpyyaml's own preview reads them: ruamel's
    round-trip loader, which keeps the tags and builds nothing.

    Arguments
    ---------
    hparams_file : str or Path
        The yaml.
    overrides : str or dict
        The overrides, as ``sb.parse_arguments`` gives them (a yaml string) or as a mapping.
    argv : list of str
        The command line, to quote each bad override as it was typed (``--sparsty=0.1``).
    shown_as : str, optional
        The yaml's name in the message (default: ``hparams_file``).

    Raises
    ------
    ValueError
        Naming each unknown key (and its closest key, when one is close).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    ...     _ = f.write("sparsity: 0.1\nmodel: !new:torch.nn.Linear [2, 2]\n"); f.flush()
    ...     check_overrides(f.name, "sparsity: 0.2", shown_as="s3router.yaml")
    ...     try:
    ...         check_overrides(f.name, "sparsty: 0.2", ["--sparsty=0.2"], "s3router.yaml")
    ...     except ValueError as err:
    ...         print(err)
    --sparsty=0.2: s3router.yaml has no key 'sparsty' (did you mean 'sparsity'?)
    """
    loader, argv = ruamel.yaml.YAML(), list(argv)
    if isinstance(overrides, str):
        try:
            overrides = loader.load(overrides) if overrides.strip() else None
        except ruamel.yaml.YAMLError as err:  # the override (one a line) where it went wrong
            mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)
            line = overrides.splitlines()[mark.line] if mark is not None else overrides
            raise ValueError(f"{_as_typed(line.partition(':')[0].strip(), argv)}: not a valid "
                             f"yaml value ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(overrides, dict) or not overrides:
        return  # nothing to check, or a shape hyperpyyaml itself refuses
    with open(hparams_file, encoding="utf-8") as fin:
        preview = loader.load(fin)
    keys = [str(k) for k in preview] if isinstance(preview, dict) else []
    unknown = [str(k) for k in overrides if str(k) not in keys]
    if not unknown:
        return
    candidates = [k for k in keys if not k.startswith("__")]
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, candidates, n=1)
        named.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    typed = [_as_typed(key, argv) for key in unknown]
    raise ValueError(f"{', '.join(typed)}: {shown_as or hparams_file} has no "
                     f"key{'s' if len(named) > 1 else ''} {', '.join(named)}")


def _as_typed(key, argv):
    """The override of ``key`` as the command line gave it: ``--key=value``, ``--key value``."""
    if f"--{key}" in argv:
        after = argv[argv.index(f"--{key}") + 1:][:1]
        return " ".join([f"--{key}", *(a for a in after if not a.startswith("--"))])
    return next((arg for arg in argv if arg.startswith(f"--{key}=")), f"--{key}")


def start_experiment(argv, recipe_dir, script=None):
    """Parse the command line, load the yaml (relative to the current directory or the recipe
    folder) and create the experiment folder with a copy of the recipe's script.

    Arguments
    ---------
    argv : list of str
        The command line after the program name (yaml path, then overrides).
    recipe_dir : str or Path
        The recipe's folder.
    script : str or Path, optional
        The script to copy into the experiment folder (default: the calling file).

    Returns
    -------
    tuple
        ``(hparams, run_opts)``.

    Raises
    ------
    ValueError
        An override names no key of the yaml (``check_overrides``), before the yaml is loaded.
    """
    given, run_opts, overrides = sb.parse_arguments(argv)
    hparams_file = resolve_hparams_path(given, recipe_dir)
    # SpeechBrain's own options (--device, --debug) are in run_opts; only overrides reach here
    check_overrides(hparams_file, overrides, argv, shown_as=given)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"],
                                   hyperparams_to_save=hparams_file, overrides=overrides)
    if if_main_process():  # SpeechBrain copies the calling module (this one); add the recipe's
        shutil.copy(script or inspect.stack()[1].filename, hparams["output_folder"])
    ssl = hparams.get("ssl")
    if ssl is not None and getattr(ssl, "ssl_init", None) == "random":
        logger.warning("The backbone is randomly initialised, not pretrained (%s)",
                       hparams.get("ssl_hub"))
    return hparams, run_opts


def setup_strategies(strategies, hparams):
    """Set up the yaml's ``strategies`` (``s3brain.strategies``, in list order) on the backbone,
    and register their extra modules (adapters, a token dropper, exit heads) beside the yaml's
    ``modules`` and in the checkpointer, so they go on the device and are saved.

    Arguments
    ---------
    strategies : list of Strategy or None
        The yaml's ``strategies``.
    hparams : dict
        The run's hyperparameters (``ssl``, ``modules``, ``checkpointer``).

    Returns
    -------
    list
        The strategies.
    """
    strategies = list(strategies or [])
    _setup_each(strategies, hparams["ssl"], hparams)
    for name, module in strategy_modules(strategies).items():
        hparams["modules"].setdefault(name, module)
        if name not in hparams["checkpointer"].recoverables:
            hparams["checkpointer"].add_recoverable(name, module)
    return strategies


def seeded_loader_options(options, seed):
    """The training loader's options with its own seeded generator, so that a run resumed
    mid-epoch draws the batches an uninterrupted one does (a DataLoader iterator draws its seed
    from the global generator when it starts).

    Arguments
    ---------
    options : dict
        The yaml's ``train_dataloader_opts``.
    seed : int
        The run's seed.

    Returns
    -------
    dict
        ``options`` with a ``generator`` (kept if the yaml gave one).

    Example
    -------
    >>> seeded_loader_options({"batch_size": 2}, 1986)["generator"].initial_seed()
    1986
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        logger.info("Distributed training: %d processes (%s backend)",
                    torch.distributed.get_world_size(), torch.distributed.get_backend())
    return {**options, "generator": options.get("generator") or torch.Generator().manual_seed(seed)}
