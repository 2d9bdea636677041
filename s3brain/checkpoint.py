"""State that SpeechBrain's checkpointer does not keep by itself.

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

import random
import time

import numpy as np
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks


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
