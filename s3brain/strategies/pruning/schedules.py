"""Unstructured magnitude-pruning baselines as training-loop hooks: OMP, IMP and PARP.

A recipe calls ``setup(model)`` once before training (after loading the fine-tuned weights the
pruning starts from), ``on_step(model, step)`` after each optimizer step, and
``before_eval(model)`` before each evaluation, so what is evaluated and checkpointed has exactly
the target sparsity. The schedules depend only on the step count, so a resumed run continues
where it stopped.

Example
-------
>>> import torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> from s3brain.strategies.s3router.masks import weight_sparsity
>>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
...     conv_kernel=(10, 3), num_feat_extract_layers=2))
>>> imp = IterativeMagnitudePruning(sparsity=0.5, rounds=2, interval_steps=10)
>>> imp.setup(model)
>>> round(weight_sparsity(model), 3)
0.293
>>> imp.on_step(model, 10)
>>> round(weight_sparsity(model), 3)
0.5
"""

from s3brain.strategies.s3router.masks import (
    add_magnitude_masks,
    mask_sparsity,
    prune_in_place,
    update_magnitude_masks,
)


class PruningSchedule:
    """Base class: nothing happens at any hook."""

    def __init__(self, sparsity, scope="both", blocks=None):
        self.sparsity = float(sparsity)
        self.scope = scope
        self.blocks = blocks

    def setup(self, model):
        """Called once, before training."""

    def on_step(self, model, step):
        """Called after optimizer step number ``step`` (1-based)."""

    def before_eval(self, model):
        """Called before each validation or test pass."""

    def at_target(self, step):
        """Whether the model has its final sparsity after ``step`` optimizer steps."""
        return True


class OneShotMagnitudePruning(PruningSchedule):
    """OMP: prune once by weight magnitude, then fine-tune the rest with the mask fixed."""

    def setup(self, model):
        """Mask the smallest-magnitude weights of ``model`` once, at the target sparsity."""
        add_magnitude_masks(model, self.sparsity, self.scope, self.blocks)


class IterativeMagnitudePruning(PruningSchedule):
    """IMP: ``rounds`` magnitude prunings, ``interval_steps`` apart, each removing the same share
    of the remaining weights, fine-tuning in between (no weight rewinding)."""

    def __init__(self, sparsity, rounds=4, interval_steps=100, scope="both", blocks=None):
        super().__init__(sparsity, scope, blocks)
        self.rounds = int(rounds)
        self.interval_steps = int(interval_steps)

    def sparsity_at(self, step):
        """The sparsity the schedule has reached after ``step`` optimizer steps."""
        done = min(self.rounds, 1 + step // self.interval_steps)
        return 1.0 - (1.0 - self.sparsity) ** (done / self.rounds)

    def setup(self, model):
        """First pruning round: magnitude masks at the first round's sparsity."""
        add_magnitude_masks(model, self.sparsity_at(0), self.scope, self.blocks)

    def at_target(self, step):
        """Whether the last round has been pruned after ``step`` optimizer steps."""
        return step >= (self.rounds - 1) * self.interval_steps

    def on_step(self, model, step):
        """Prune the next round when ``step`` reaches it (masks only grow)."""
        target = self.sparsity_at(step)
        current = max(mask_sparsity(model).values())
        if target > current + 1e-6:
            update_magnitude_masks(model, target)


class PruneAdjustReprune(PruningSchedule):
    """PARP: zero the smallest weights, let every weight (zeroed ones too) go on training, and
    re-prune to the same sparsity every ``interval_steps`` and before every evaluation."""

    def __init__(self, sparsity, interval_steps=50, scope="both", blocks=None):
        super().__init__(sparsity, scope, blocks)
        self.interval_steps = int(interval_steps)

    def setup(self, model):
        """Zero the smallest weights once, at the target sparsity (no mask: they may regrow)."""
        prune_in_place(model, self.sparsity, self.scope, self.blocks)

    def on_step(self, model, step):
        """Re-prune to the target sparsity every ``interval_steps`` steps."""
        if step % self.interval_steps == 0:
            prune_in_place(model, self.sparsity, self.scope, self.blocks)

    def before_eval(self, model):
        """Re-prune, so what is evaluated and checkpointed has the target sparsity."""
        prune_in_place(model, self.sparsity, self.scope, self.blocks)
