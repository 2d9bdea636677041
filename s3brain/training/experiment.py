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
import inspect
import logging
import shutil
import sys
from pathlib import Path

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
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    hparams_file = resolve_hparams_path(hparams_file, recipe_dir)
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
