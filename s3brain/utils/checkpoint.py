"""Checkpointing that survives a kill at any moment.

``Checkpointer`` is SpeechBrain's, except that a checkpoint only becomes visible once all its
files are written. SpeechBrain writes ``CKPT.yaml`` (which marks a folder as a checkpoint) before
the parameter files, so a process killed while saving leaves a checkpoint with truncated files
that the next run picks and fails to load. Here the meta file is written aside and renamed into
place last.

``RunState`` saves the random generators (torch, numpy, Python) and the training wall time with
every checkpoint, so a run killed mid-epoch and resumed draws the same dropout and masking as an
uninterrupted one, and reports its total training time.

Example
-------
>>> import tempfile, os, torch
>>> state = RunState()
>>> with tempfile.TemporaryDirectory() as d:
...     state._save(os.path.join(d, "state.pt"))
...     expected = torch.rand(3)
...     _ = torch.rand(5)
...     state._recover(os.path.join(d, "state.pt"), end_of_epoch=False)
...     again = torch.rand(3)
>>> bool(torch.equal(expected, again))
True
"""

import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import speechbrain.utils.checkpoints as sb_checkpoints
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast

logger = logging.getLogger(__name__)


_PENDING_META = sb_checkpoints.METAFNAME + ".pending"


class Checkpointer(sb_checkpoints.Checkpointer):
    """SpeechBrain's ``Checkpointer`` with checkpoints published atomically."""

    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):
        return super()._save_checkpoint_metafile(fpath.with_name(_PENDING_META), meta_to_include,
                                                 end_of_epoch)

    def save_checkpoint(self, *args, **kwargs):
        """Save as SpeechBrain does, then publish the checkpoint by renaming its meta file."""
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if checkpoint is not None:  # main process
            os.replace(checkpoint.path / _PENDING_META, checkpoint.path / sb_checkpoints.METAFNAME)
        # Every process must see the same checkpoints when deciding what to delete next.
        ddp_barrier()
        return checkpoint


def share_checkpoint_dir(checkpointer):
    """Make every DDP process use the main process's checkpoint folder.

    With ``--debug`` SpeechBrain gives each process its own temporary folder; the processes then
    disagree on which checkpoints exist and deadlock when old ones are deleted. Call after the
    Brain is built; without DDP it changes nothing.
    """
    if checkpointer is not None:
        checkpointer.checkpoints_dir = ddp_broadcast(checkpointer.checkpoints_dir)


@register_checkpoint_hooks
class RunState:
    """Random generator states plus accumulated training seconds."""

    def __init__(self):
        self.train_seconds = 0.0
        self._started = None

    def start_timer(self):
        """Start counting training time."""
        self._started = time.time()

    def stop_timer(self):
        """Stop counting and add the elapsed time."""
        if self._started is not None:
            self.train_seconds += time.time() - self._started
            self._started = None

    def elapsed(self):
        """Training seconds so far, the running interval included."""
        running = time.time() - self._started if self._started is not None else 0.0
        return self.train_seconds + running

    @mark_as_saver
    def _save(self, path):
        torch.save({"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(), "train_seconds": self.elapsed()}, path)

    @mark_as_loader
    def _recover(self, path, end_of_epoch):
        del end_of_epoch
        state = torch.load(path, weights_only=False)
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        self.train_seconds = state["train_seconds"]
        if self._started is not None:
            self._started = time.time()


def load_finetuned(folder, recoverables, key="WER"):
    """Load the best (lowest dev ``key``) checkpoint of the run in ``folder`` into
    ``recoverables``.

    Arguments
    ---------
    folder : str or Path
        An earlier run's output folder (its ``save/`` holds the checkpoints).
    recoverables : dict
        ``{name: module}`` to load, by the checkpoint's file names.
    key : str
        The metric the checkpoints are ranked by (``WER``, ``PER``, ``error``).
    """
    save = Path(folder) / "save"
    ckpt = sb.utils.checkpoints.Checkpointer(save).find_checkpoint(min_key=key) \
        if save.is_dir() else None
    if ckpt is None:
        raise FileNotFoundError(
            f"init_from={folder}: no checkpoint in {save}. This strategy starts from a fine-tuned "
            f"model: run weight fine-tuning first (python train.py hparams/weight_ft.yaml with the "
            f"same data and backbone) or pass --init_from=<its output folder>.")
    for name, module in recoverables.items():
        state = torch.load(ckpt.paramfiles[name], map_location="cpu")
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"init_from={folder}: its {name} does not fit this model "
                             f"(another backbone or strategy?): {str(err)[:300]}") from err
    logger.info("Initialised from %s (dev %s %.2f)", ckpt.path, key,
                ckpt.meta.get(f"dev_{key}", ckpt.meta[key]))


def unwrapped(module):
    """The module inside a DDP wrapper (DDP wraps the modules that have parameters).

    Arguments
    ---------
    module : torch.nn.Module
        A module, wrapped or not.

    Returns
    -------
    torch.nn.Module

    Example
    -------
    >>> layer = torch.nn.Linear(2, 2)
    >>> unwrapped(layer) is layer
    True
    """
    return getattr(module, "module", module)
