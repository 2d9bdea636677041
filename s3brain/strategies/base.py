"""Strategies as objects: what a fine-tuning run does to the backbone beyond training its weights.

A run's yaml lists its strategies (``strategies: [!new:s3brain.strategies.InitFrom ...,
!new:s3brain.strategies.Pruning ...]``); every recipe's ``Brain`` calls the same hooks of each,
in list order, and never asks which strategy it runs. The hooks (all no-ops in ``Strategy``):

- ``setup(ssl, hparams)``: once, before training (load weights, add masks, prune, freeze);
- ``modules()``: extra modules trained with the head and checkpointed (exit heads, adapters);
- ``encode(ssl, wavs, wav_lens, stage)``: the backbone's forward when the strategy changes it
  (at most one strategy of a run may), else None;
- ``output_frames(model, samples)``: the frames the changed forward gives (data filtering);
- ``loss(predictions, batch, stage)``: a term added to the task's loss, or None;
- ``on_step(ssl, step)``, ``before_eval(ssl)``, ``at_target(step)``: training-loop hooks of a
  pruning schedule (a checkpoint taken before ``at_target`` ranks after all later ones);
- ``stage_start(stage)``, ``stage_stats(stage)``: statistics of an evaluation pass;
- ``deployable(ssl)``: the backbone as deployed (masks folded, pruned units removed);
- ``export(deployment)``: what the inference folder adds for it (a changed forward, adapters);
- ``task_payload(path, ssl, head, info)``: the bytes one more task costs on a shared backbone;
- ``sparsity``: the nominal sparsity; ``keeps_backbone_weights``: whether the pretrained weights
  stay bit-identical (so that tasks can share one backbone).

Example
-------
>>> import torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> from s3brain.strategies import InitFrom, Pruning
>>> from s3brain.strategies.pruning.schedules import OneShotMagnitudePruning
>>> from s3brain.strategies.s3router.masks import weight_sparsity
>>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
...     conv_kernel=(10, 3), num_feat_extract_layers=2))
>>> strategies = [InitFrom(None), Pruning(OneShotMagnitudePruning(sparsity=0.5))]
>>> setup_strategies(strategies, model, {"seed": 0})
>>> deployed = deployable(strategies, model)
>>> round(weight_sparsity(deployed), 2), run_sparsity(strategies)
(0.5, 0.5)
"""

import logging

from s3brain.strategies.s3router.masks import fold

logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """A run's deployed model cannot be written as an inference folder (one line says why)."""


class Strategy:
    """A strategy that does nothing: the base of every strategy, each hook a no-op.

    Example
    -------
    >>> s = Strategy()
    >>> s.encode(None, None, None, None) is None, s.at_target(0), s.sparsity
    (True, True, 0.0)
    """

    #: Whether ``encode`` replaces the backbone's forward (at most one strategy of a run).
    changes_forward = False
    #: Whether the backbone's pretrained weights stay bit-identical (tasks can share them).
    keeps_backbone_weights = True
    #: Whether only training needs the strategy's ``setup`` (starting weights, a teacher): the
    #: run's checkpoint holds its result, so rebuilding a finished run skips it.
    trains_only = False
    #: Whether each utterance is decoded alone, at a depth of its own (early exit): a batch
    #: forward of the deployed backbone is its cost, not how it decodes.
    decodes_alone = False

    def setup(self, ssl, hparams):
        """Prepare the backbone before training.

        Arguments
        ---------
        ssl : torch.nn.Module
            The SpeechBrain wrapper of the backbone (``hparams["ssl"]``).
        hparams : dict
            The run's hyperparameters (``seed``, ``model``: the head).
        """

    def modules(self):
        """Extra modules trained with the head, put on the device and checkpointed.

        Returns
        -------
        dict
            ``{name: nn.Module}``; empty by default.
        """
        return {}

    def encode(self, ssl, wavs, wav_lens, stage):
        """The backbone's features when this strategy changes its forward.

        Arguments
        ---------
        ssl : torch.nn.Module
            The backbone wrapper.
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor or None
            Relative lengths.
        stage : speechbrain.Stage or None
            The stage (None when measuring the deployed cost).

        Returns
        -------
        tuple or None
            ``(features, wav_lens)`` (lengths changed if frames were dropped), or None when the
            strategy leaves the forward alone.
        """
        return None

    def output_frames(self, model, samples):
        """Frames the backbone gives for ``samples`` of audio when this strategy changes it.

        Arguments
        ---------
        model : transformers.PreTrainedModel
            The transformers model.
        samples : int
            Audio samples at the backbone's rate.

        Returns
        -------
        int or None
            None: the backbone's own count.
        """
        return None

    def loss(self, predictions, batch, stage):
        """A term added to the task's loss.

        Arguments
        ---------
        predictions : object
            What the Brain's ``compute_forward`` returned.
        batch : PaddedBatch
            The batch.
        stage : speechbrain.Stage
            The stage.

        Returns
        -------
        torch.Tensor or None
            The term (already weighted), or None.
        """
        return None

    def on_step(self, ssl, step):
        """Called after optimizer step number ``step`` (1-based).

        Arguments
        ---------
        ssl : torch.nn.Module
            The backbone wrapper.
        step : int
            Optimizer steps done.
        """

    def before_eval(self, ssl):
        """Called before each validation or test pass.

        Arguments
        ---------
        ssl : torch.nn.Module
            The backbone wrapper.
        """

    def at_target(self, step):
        """Whether the model is final after ``step`` optimizer steps (for checkpoint ranking).

        Arguments
        ---------
        step : int
            Optimizer steps done.

        Returns
        -------
        bool
        """
        return True

    def stage_start(self, stage):
        """Reset this strategy's statistics at the start of an evaluation pass.

        Arguments
        ---------
        stage : speechbrain.Stage
            The stage starting.
        """

    def stage_stats(self, stage):
        """Statistics of the evaluation pass that ends, merged into the stage's stats.

        Arguments
        ---------
        stage : speechbrain.Stage
            The stage ending.

        Returns
        -------
        dict
            Empty by default.
        """
        return {}

    def deployable(self, ssl):
        """The backbone as it would be deployed, from a copy that this hook may change.

        Arguments
        ---------
        ssl : torch.nn.Module
            A CPU copy of the backbone wrapper (masks already folded).

        Returns
        -------
        torch.nn.Module
            The backbone wrapper to measure (``ssl`` itself by default).
        """
        return ssl

    def export(self, deployment):
        """How this strategy's part of the deployed model is shipped in an inference folder:
        what it adds to the deployed CTC model (``encode``: a module whose
        ``forward(encoder, wavs, wav_lens)`` gives the log-probabilities, built from the
        deployment's own copies of the strategy's modules) and to the backbone's constructor
        (``backbone``: keyword arguments of ``s3brain.deployment.modules.Backbone``).

        A strategy whose deployed backbone says it all (folded masks, a shrunk or merged
        model) adds nothing; one that changes the forward must add its ``encode``.

        Arguments
        ---------
        deployment : s3brain.deployment.model.Deployment
            The deployed model (``deployment.strategies`` holds this strategy's copy).

        Returns
        -------
        dict
            ``{"encode": module, "backbone": {...}}``, either key optional; empty by default.

        Raises
        ------
        ExportError
            The strategy's deployed model cannot be shipped (one line says why).
        """
        return {}

    def frame_chooser(self):
        """The module that chooses which CNN frames the transformer sees when the deployed
        model decodes (``keep(features, lengths)``), where the cost's copy keeps a share of
        them regardless of which; None (the default) when the strategy chooses none.

        Returns
        -------
        callable or None
        """
        return None

    def task_payload(self, path, ssl, head, info):
        """What one more task costs on a shared, frozen backbone.

        Arguments
        ---------
        path : pathlib.Path
            The run's output folder (where a task file may be written).
        ssl : torch.nn.Module
            The backbone wrapper.
        head : torch.nn.Module
            The task's head.
        info : dict
            Descriptive keys for a task file's metadata.

        Returns
        -------
        int or None
            Bytes per task, or None: the strategy has no payload of its own.
        """
        return None

    def deployed_cost(self, results, ssl, seconds):
        """Correct the measured cost for what the measurement's forward cannot show (an early
        exit's blocks not run), in place.

        Arguments
        ---------
        results : dict
            The run's results, cost keys included (``flops_<seconds>s``...).
        ssl : torch.nn.Module
            The backbone wrapper.
        seconds : float
            The audio length of the cost measurement.
        """

    @property
    def sparsity(self):
        """The nominal sparsity (mean over blocks for a per-block list); 0.0 if dense."""
        return 0.0


def _mean(value):
    """A float, or the mean of a per-block list."""
    return float(sum(value) / len(value)) if isinstance(value, (list, tuple)) else float(value)


def strategy_modules(strategies):
    """The extra modules of a run's strategies, by name (``Strategy.modules``).

    Arguments
    ---------
    strategies : list of Strategy
        The run's strategies.

    Returns
    -------
    dict
    """
    modules = {}
    for strategy in strategies:
        modules.update(strategy.modules())
    return modules


def encode(strategies, ssl, wavs, wav_lens, stage):
    """The backbone's features under the run's strategies: the one that changes the forward,
    else the plain backbone.

    Arguments
    ---------
    strategies : list of Strategy
        The run's strategies.
    ssl : torch.nn.Module
        The backbone wrapper.
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor or None
        Relative lengths.
    stage : speechbrain.Stage or None
        The stage.

    Returns
    -------
    tuple
        ``(features, wav_lens)``.
    """
    for strategy in strategies:
        out = strategy.encode(ssl, wavs, wav_lens, stage)
        if out is not None:
            return out
    return ssl(wavs, wav_lens), wav_lens


def setup_strategies(strategies, ssl, hparams):
    """Set up each strategy in list order, after checking that at most one changes the forward.

    Arguments
    ---------
    strategies : list of Strategy
        The run's strategies.
    ssl : torch.nn.Module
        The backbone wrapper.
    hparams : dict
        The run's hyperparameters.
    """
    changing = [type(s).__name__ for s in strategies if s.changes_forward]
    if len(changing) > 1:
        raise ValueError(f"strategies {changing} each change the backbone's forward; a run can "
                         f"have only one of them")
    for strategy in strategies:
        strategy.setup(ssl, hparams)


def deployable(strategies, ssl):
    """The backbone as deployed: masks folded, then each strategy's ``deployable`` in order.

    Arguments
    ---------
    strategies : list of Strategy
        The run's strategies.
    ssl : torch.nn.Module
        A copy of the backbone wrapper, changed in place.

    Returns
    -------
    torch.nn.Module
        The deployed backbone wrapper.
    """
    ssl = fold(ssl)
    for strategy in strategies:
        ssl = strategy.deployable(ssl)
    return ssl


def run_sparsity(strategies):
    """The run's nominal sparsity: the largest of its strategies' (0.0 if dense).

    Arguments
    ---------
    strategies : list of Strategy
        The run's strategies.

    Returns
    -------
    float
    """
    return max((s.sparsity for s in strategies), default=0.0)


def task_payload(strategies, path, ssl, head, info):
    """Bytes one more task costs on a shared backbone, or None when every task needs a whole
    model (some strategy changes the backbone weights, or none has a payload of its own).

    Arguments
    ---------
    strategies : list of Strategy
        The run's strategies.
    path : pathlib.Path
        The run's output folder.
    ssl : torch.nn.Module
        The backbone wrapper.
    head : torch.nn.Module
        The task's head.
    info : dict
        Descriptive keys for a task file's metadata.

    Returns
    -------
    int or None
    """
    if not all(s.keeps_backbone_weights for s in strategies):
        return None
    sizes = [s.task_payload(path, ssl, head, info) for s in strategies]
    sizes = [size for size in sizes if size is not None]
    return sum(sizes) if sizes else None
