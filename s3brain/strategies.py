"""Strategies as objects: what a fine-tuning run does to the backbone beyond training its weights.

A run's yaml lists its strategies (``strategies: [!new:s3brain.strategies.InitFrom ...,
!new:s3brain.strategies.Pruning ...]``); every recipe's ``Brain`` calls the same hooks of each,
in list order, and never asks which strategy it runs. The hooks (all no-ops in ``Strategy``):

- ``setup(ssl, hparams)``: once, before training (load weights, add masks, prune, freeze);
- ``modules()``: extra modules trained with the head and checkpointed (exit heads, adapters);
- ``encode(ssl, wavs, wav_lens, stage)``: the backbone's forward when the strategy changes it
  (at most one strategy of a run may), else None;
- ``loss(predictions, batch, stage)``: a term added to the task's loss, or None;
- ``on_step(ssl, step)``, ``before_eval(ssl)``, ``at_target(step)``: training-loop hooks of a
  pruning schedule (a checkpoint taken before ``at_target`` ranks after all later ones);
- ``stage_start(stage)``, ``stage_stats(stage)``: statistics of an evaluation pass;
- ``deployable(ssl)``: the backbone as deployed (masks folded, pruned units removed);
- ``task_payload(path, ssl, head, info)``: the bytes one more task costs on a shared backbone;
- ``sparsity``: the nominal sparsity; ``keeps_backbone_weights``: whether the pretrained weights
  stay bit-identical (so that tasks can share one backbone).

Example
-------
>>> import torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> from s3brain.pruning import OneShotMagnitudePruning
>>> from s3brain.masks import weight_sparsity
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

from s3brain.masks import add_masks, fold

logger = logging.getLogger(__name__)


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

    @property
    def sparsity(self):
        """The nominal sparsity (mean over blocks for a per-block list); 0.0 if dense."""
        return 0.0


def _mean(value):
    return float(sum(value) / len(value)) if isinstance(value, (list, tuple)) else float(value)


class InitFrom(Strategy):
    """Start from the best checkpoint (backbone and head) of an earlier run.

    Arguments
    ---------
    folder : str or None
        The earlier run's output folder; None starts from the pretrained backbone.
    key : str
        The checkpoint metadata key ranked lowest-best (``WER``, ``PER``, ``error``).

    Example
    -------
    >>> InitFrom(None).keeps_backbone_weights, InitFrom("results/weight_ft/1").keeps_backbone_weights
    (True, False)
    """

    def __init__(self, folder, key="WER"):
        self.folder = folder
        self.key = key

    @property
    def keeps_backbone_weights(self):
        return not self.folder

    def setup(self, ssl, hparams):
        if self.folder:
            from s3brain.ctc import load_finetuned

            load_finetuned(self.folder, {"ssl": ssl, "model": hparams["model"]}, self.key)


class Masks(Strategy):
    """S3-Router: learned binary masks over the frozen backbone weights
    (``s3brain.masks.add_masks``); a task is its mask file (``task_mask.safetensors``).

    Arguments
    ---------
    sparsity : float or list
        Share of the masked weights removed per layer (or one value per block).
    init : str
        ``ori``, ``ri`` or ``wmi``.
    scope : str
        ``ffn``, ``attention`` or ``both``.
    blocks : list or None
        The transformer blocks masked; None: all.
    seed : int or None
        Seed of the score initialisation; None: the run's ``seed``.

    Example
    -------
    >>> Masks(sparsity=[0.1, 0.3]).sparsity
    0.2
    """

    file_name = "task_mask.safetensors"

    def __init__(self, sparsity=0.1, init="ori", scope="ffn", blocks=None, seed=None):
        self.options = {"sparsity": sparsity, "init": init, "scope": scope, "blocks": blocks}
        self.seed = seed

    def setup(self, ssl, hparams):
        seed = self.seed if self.seed is not None else hparams.get("seed", 0)
        names = add_masks(ssl, seed=seed, **self.options)
        logger.info("Learned masks on %d layers (%s), backbone weights frozen", len(names),
                    self.options)

    def deployable(self, ssl):
        return fold(ssl)

    def task_payload(self, path, ssl, head, info):
        from s3brain.mask_bank import save_mask

        return save_mask(path / self.file_name, ssl, head=head, **info, **self.options)

    @property
    def sparsity(self):
        return _mean(self.options["sparsity"])


class Pruning(Strategy):
    """Any ``s3brain.pruning.PruningSchedule`` (OMP, IMP, PARP, and the structured
    ``StructuredOneShot``, ``StructuredPARP``, ``Safari``) as a strategy: its hooks run in every
    Brain, and a structured schedule's deployed model is physically shrunk.

    Arguments
    ---------
    schedule : s3brain.pruning.PruningSchedule
        The schedule.

    Example
    -------
    >>> from s3brain.structured import Safari
    >>> Pruning(Safari(sparsity=0.3)).structured
    True
    """

    keeps_backbone_weights = False

    def __init__(self, schedule):
        self.schedule = schedule

    @property
    def structured(self):
        """Whether the schedule removes whole units (neurons, heads): shrunk when deployed."""
        from s3brain.structured import StructuredOneShot, StructuredPARP

        return isinstance(self.schedule, (StructuredOneShot, StructuredPARP))

    def setup(self, ssl, hparams):
        self.schedule.setup(ssl)

    def on_step(self, ssl, step):
        self.schedule.on_step(ssl, step)

    def before_eval(self, ssl):
        self.schedule.before_eval(ssl)

    def at_target(self, step):
        return self.schedule.at_target(step)

    def deployable(self, ssl):
        if self.structured:
            from s3brain.structured import shrink

            shrink(fold(ssl))  # in place: the wrapper now holds the smaller model
        return ssl

    @property
    def sparsity(self):
        return _mean(self.schedule.sparsity)


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
