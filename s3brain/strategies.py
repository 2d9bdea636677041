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

import copy
import logging

import torch
from torch import nn

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
    >>> InitFrom(None).keeps_backbone_weights, InitFrom("results/ft").keeps_backbone_weights
    (True, False)
    """

    def __init__(self, folder, key="WER"):
        self.folder = folder
        self.key = key

    @property
    def keeps_backbone_weights(self):
        """Whether no checkpoint is loaded (the pretrained weights stay)."""
        return not self.folder

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``."""
        if self.folder:
            from s3brain.experiment import load_finetuned

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
        """See ``Strategy.setup``."""
        seed = self.seed if self.seed is not None else hparams.get("seed", 0)
        names = add_masks(ssl, seed=seed, **self.options)
        logger.info("Learned masks on %d layers (%s), backbone weights frozen", len(names),
                    self.options)

    def deployable(self, ssl):
        """See ``Strategy.deployable``."""
        return fold(ssl)

    def task_payload(self, path, ssl, head, info):
        """See ``Strategy.task_payload``."""
        from s3brain.mask_bank import save_mask

        return save_mask(path / self.file_name, ssl, head=head, **info, **self.options)

    @property
    def sparsity(self):
        """See ``Strategy.sparsity``."""
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
        """See ``Strategy.setup``."""
        self.schedule.setup(ssl)

    def on_step(self, ssl, step):
        """See ``Strategy.on_step``."""
        self.schedule.on_step(ssl, step)

    def before_eval(self, ssl):
        """See ``Strategy.before_eval``."""
        self.schedule.before_eval(ssl)

    def at_target(self, step):
        """See ``Strategy.at_target``."""
        return self.schedule.at_target(step)

    def deployable(self, ssl):
        """See ``Strategy.deployable``."""
        if self.structured:
            from s3brain.structured import shrink

            shrink(fold(ssl))  # in place: the wrapper now holds the smaller model
        return ssl

    @property
    def sparsity(self):
        """See ``Strategy.sparsity``."""
        return _mean(self.schedule.sparsity)


class TokenDropping(Strategy):
    """SALAD, uniform or random token dropping (``s3brain.salad.TokenDropping``): CNN frames
    dropped before the transformer. It counts the frames it keeps; the first test pass's share is
    what its deployed model keeps.

    Arguments
    ---------
    method : str
        ``salad``, ``uniform`` or ``random``.
    skip_ratio : float
        For ``salad``: share of the non-salient frames removed.
    drop_share : float
        For ``uniform`` and ``random``: share of all frames removed.
    detector : s3brain.salad.SaladDetector, optional
        The trained detector (``salad``).
    seed : int
        Seed of the ``random`` baseline.

    Example
    -------
    >>> dropping = TokenDropping("uniform", drop_share=0.5)
    >>> dropping.changes_forward, list(dropping.modules())
    (True, ['token_dropping'])
    """

    changes_forward = True

    def __init__(self, method="salad", skip_ratio=0.6, drop_share=0.0, detector=None, seed=0):
        from s3brain.salad import TokenDropping as Dropper

        self.dropper = Dropper(method, skip_ratio, drop_share, detector, seed)
        self.collect_blocks = False  # set by Distillation: keep every block's output in training
        self.kept = self.blocks = None
        self.deployed_kept_share = None  # measured on the first test pass

    def modules(self):
        """See ``Strategy.modules``."""
        return {"token_dropping": self.dropper}

    def encode(self, ssl, wavs, wav_lens, stage):
        """See ``Strategy.encode``."""
        from s3brain.salad import encode_with_dropping

        ssl = getattr(ssl, "module", ssl)  # DDP
        collect = self.collect_blocks and stage is not None and stage.name == "TRAIN"
        feats, wav_lens, self.kept, *blocks = encode_with_dropping(
            ssl, wavs, wav_lens, self.dropper, blocks=collect)
        self.blocks = blocks[0] if blocks else None
        return feats, wav_lens

    def stage_start(self, stage):
        """See ``Strategy.stage_start``."""
        self.dropper.reset_counts()

    def stage_stats(self, stage):
        """See ``Strategy.stage_stats``."""
        share = round(self.dropper.kept_share, 4)
        if stage.name == "TEST" and self.deployed_kept_share is None:
            self.deployed_kept_share = share
        return {"kept_share": share}

    def deployable(self, ssl):
        """See ``Strategy.deployable``."""
        if self.deployed_kept_share is None:
            raise ValueError("token dropping: no test pass has measured the share of frames kept")
        detector = self.dropper.detector
        detector = copy.deepcopy(detector).cpu() if detector is not None else None
        return DroppedFramesBackbone(ssl, detector, self.deployed_kept_share)


class DroppedFramesBackbone(nn.Module):
    """A backbone that runs its transformer on ``kept_share`` of the CNN frames (FLOPs and time
    do not depend on which frames), the SALAD detector's cost included: token dropping as
    deployed, for cost measurement. Not exportable to ONNX (``onnx_exportable``).

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper.
    detector : torch.nn.Module or None
        The detector run on the CNN features (its cost counts).
    kept_share : float
        Share of the frames the transformer sees.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> class Wrapper(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
    ...             num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8),
    ...             conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
    ...         self.normalize_wav, self.output_norm = False, False
    >>> DroppedFramesBackbone(Wrapper(), None, 0.5)(torch.randn(1, 16000)).shape
    torch.Size([1, 799, 32])
    """

    onnx_exportable = False

    def __init__(self, ssl, detector, kept_share):
        super().__init__()
        self.ssl, self.kept_share = ssl, kept_share
        # not a submodule: its parameters are the token dropper's, counted there
        self._detector = (detector,)
        self.model = ssl.model
        self.normalize_wav, self.output_norm = ssl.normalize_wav, ssl.output_norm

    def keep(self, features, lengths):
        """Frames kept: the detector runs (its cost counts), then a uniform share is kept
        (which frames does not change the cost)."""
        from s3brain.salad import uniform_keep

        if self._detector[0] is not None:
            self._detector[0](features)
        return uniform_keep(lengths, features.shape[1], 1.0 - self.kept_share)

    def forward(self, wavs, wav_lens=None):
        """Features of the frames kept, ``[batch, kept frames, hidden]``."""
        from s3brain.salad import encode_with_dropping

        return encode_with_dropping(self.ssl, wavs, wav_lens, self.keep)[0]


class Distillation(Strategy):
    """Layer-wise distillation (S6-DAMON, Eq. 2): MSE between every block's output and a frozen
    teacher's, on the frames the student kept; needs ``TokenDropping`` in the same list, and
    comes before any masks or pruning (the teacher is a copy of the backbone as it is then).

    Arguments
    ---------
    weight : float
        Weight of the term; 0 turns distillation off.
    teacher_from : str or None
        The fine-tuned run whose backbone is the teacher.
    key : str
        Its checkpoints' ranking key.

    Example
    -------
    >>> Distillation(0.0, None).loss(None, None, None) is None
    True
    """

    def __init__(self, weight=0.0, teacher_from=None, key="WER"):
        self.weight, self.teacher_from, self.key = float(weight), teacher_from, key
        self.teacher = self.student = None

    def __deepcopy__(self, memo):  # a cost copy needs no second teacher
        """A cost copy needs no second teacher: the strategy itself."""
        return self

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``."""
        if self.weight <= 0:
            return
        from s3brain.backbone import disable_layerdrop
        from s3brain.experiment import load_finetuned

        if not self.teacher_from:
            raise ValueError("distill_weight > 0 needs teacher_from=<a weight fine-tuning run>")
        student = [s for s in hparams.get("strategies") or [] if isinstance(s, TokenDropping)]
        if not student:
            raise ValueError("distillation needs token dropping in the same strategies list")
        self.student = student[0]
        self.student.collect_blocks = True
        disable_layerdrop(ssl, "distillation compares every block's output with the teacher's")
        teacher = copy.deepcopy(ssl)
        load_finetuned(self.teacher_from, {"ssl": teacher}, self.key)
        self.teacher = teacher.requires_grad_(False).eval()

    def loss(self, predictions, batch, stage):
        """See ``Strategy.loss``."""
        if self.teacher is None or stage.name != "TRAIN":
            return None
        from speechbrain.dataio.dataio import length_to_mask

        from s3brain.backbone import wrapper_forward
        from s3brain.families import block_outputs, pack_kept

        wavs, wav_lens = batch.sig
        teacher = self.teacher.to(wavs.device).eval()
        with torch.no_grad(), block_outputs(teacher.model) as hiddens:
            wrapper_forward(teacher, wavs, wav_lens, every_layer=False)
        student, kept = self.student.blocks, self.student.kept
        if student is None or len(student) != len(hiddens):
            raise ValueError("distillation needs token dropping and as many blocks as the teacher")
        valid = length_to_mask(kept.sum(1), student[0].shape[1], dtype=torch.bool,
                               device=wavs.device).unsqueeze(-1)
        loss = 0.0
        for t_hidden, s_hidden in zip(hiddens, student):  # every block's output
            t_kept, _ = pack_kept(t_hidden, kept)
            loss = loss + ((s_hidden - t_kept) ** 2 * valid).sum() / (
                valid.sum() * s_hidden.shape[-1])
        return self.weight * loss / len(hiddens)


class Adapters(Strategy):
    """Adapter tuning: Houlsby adapters (``s3brain.adapters.Adapters``, SpeechBrain's
    ``HoulsbyAdapterLinear`` started at the identity) after the chosen linears of every block,
    the backbone frozen; a task is its adapters and head.

    The adapters sit inside the backbone (SpeechBrain's ``AdaptedModel`` wraps its linears in
    place), so they train with the backbone's optimizer (``lr_ssl``, the backbone's only
    trainable tensors) and are checkpointed and resumed with ``ssl``; ``modules()`` stays
    empty, as listing them there too would put them in both optimizers. An adapter is
    nonlinear: the deployed model keeps it (no merge), and its cost counts there.

    Arguments
    ---------
    bottleneck : int
        Width of each adapter's down-projection.
    targets : list of str
        The linears adapted in every block (``s3brain.adapters.target_layers``).

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2))
    >>> strategy = Adapters(bottleneck=8)
    >>> strategy.setup(model, {})
    >>> strategy.task_payload(None, model, nn.Linear(32, 2), {})  # 4 x (1104 + 66)
    4680
    """

    def __init__(self, bottleneck=64, targets=("output_dense",)):
        self.bottleneck = bottleneck
        self.targets = list(targets)

    def add(self, ssl):
        """Put the adapters into the backbone.

        Arguments
        ---------
        ssl : torch.nn.Module
            The backbone wrapper (or transformers model).

        Returns
        -------
        s3brain.adapters.AddedAdapters
            The added trainable projections.
        """
        from s3brain.adapters import Adapters as HoulsbyAdapters

        return HoulsbyAdapters(ssl, bottleneck=self.bottleneck, targets=self.targets)

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``."""
        added = self.add(ssl)
        logger.info("%s on %d layers (%s): %d trainable parameters, backbone frozen",
                    type(self).__name__, len(added.layer_names), ", ".join(self.targets),
                    sum(p.numel() for p in added.parameters()))

    def task_payload(self, path, ssl, head, info):
        """See ``Strategy.task_payload``: the adapters' tensors and the head's."""
        from s3brain.adapters import adapter_state_dict

        tensors = [*adapter_state_dict(ssl).values(), *head.state_dict().values()]
        return sum(t.numel() * t.element_size() for t in tensors)


class LoRA(Adapters):
    """LoRA (``s3brain.adapters.LoRAAdapters``, SpeechBrain's ``LoRA``) on the chosen linears of
    every block, the backbone frozen; a task is its LoRA tensors and head. Trained, saved and
    resumed as ``Adapters``; deployed merged into plain ``nn.Linear`` weights
    (``W + alpha / rank * B A``), so the deployed backbone costs what the plain one does.

    Arguments
    ---------
    rank : int
        Rank of each update.
    alpha : float
        Each update is scaled by ``alpha / rank``.
    targets : list of str
        The linears adapted in every block (``s3brain.adapters.target_layers``).

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2))
    >>> strategy = LoRA(rank=2, targets=["attention"])
    >>> strategy.setup(model, {})
    >>> strategy.task_payload(None, model, nn.Linear(32, 2), {})  # 4 x (2 x 4 x 2 x 64 + 66)
    4360
    >>> type(strategy.deployable(model).encoder.layers[0].attention.q_proj).__name__
    'Linear'
    """

    def __init__(self, rank=8, alpha=8.0, targets=("attention", "ffn")):
        self.rank, self.alpha = rank, alpha
        self.targets = list(targets)

    def add(self, ssl):
        """Put the LoRA layers into the backbone.

        Arguments
        ---------
        ssl : torch.nn.Module
            The backbone wrapper (or transformers model).

        Returns
        -------
        s3brain.adapters.AddedAdapters
            The added trainable projections.
        """
        from s3brain.adapters import LoRAAdapters

        return LoRAAdapters(ssl, rank=self.rank, alpha=self.alpha, targets=self.targets)

    def deployable(self, ssl):
        """See ``Strategy.deployable``: every LoRA layer merged into its ``nn.Linear``."""
        from s3brain.adapters import merge_lora

        return merge_lora(ssl)


class Downsampling(Strategy):
    """Input downsampling (``s3brain.downsampling.InputDownsampling``): the waveform shortened
    before the backbone, the output frames optionally repeated back.

    Arguments
    ---------
    downsampler : s3brain.downsampling.InputDownsampling
        The downsampler (a learned one trains with the head).

    Example
    -------
    >>> from s3brain.downsampling import InputDownsampling
    >>> strategy = Downsampling(InputDownsampling("pool", factor=2))
    >>> strategy.changes_forward, list(strategy.modules())
    (True, ['downsampler'])
    """

    changes_forward = True

    def __init__(self, downsampler):
        self.downsampler = downsampler

    def modules(self):
        """See ``Strategy.modules``."""
        return {"downsampler": self.downsampler}

    def encode(self, ssl, wavs, wav_lens, stage):
        """See ``Strategy.encode``."""
        return self.downsampler.upsample(ssl(self.downsampler(wavs), wav_lens)), wav_lens

    def output_frames(self, model, samples):
        """See ``Strategy.output_frames``."""
        return self.downsampler.frames(model, samples)

    def deployable(self, ssl):
        """See ``Strategy.deployable``."""
        return DownsampledBackbone(ssl, copy.deepcopy(self.downsampler).cpu())


class DownsampledBackbone(nn.Module):
    """A backbone behind input downsampling, as deployed: ``forward`` is the lobe's path,
    ``before``/``after`` what an exported model adds around the transformers model.

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper.
    downsampler : s3brain.downsampling.InputDownsampling
        The downsampler.

    Example
    -------
    >>> from s3brain.downsampling import InputDownsampling
    >>> down = DownsampledBackbone(nn.Identity(), InputDownsampling("pool", factor=2))
    >>> down.before(torch.randn(1, 16000)).shape[1] == down.downsampler.samples(16000)
    True
    """

    def __init__(self, ssl, downsampler):
        super().__init__()
        self.ssl = ssl
        # not a submodule: its parameters are the strategy's module's, counted there
        self._downsampler = (downsampler,)
        for name in ("model", "normalize_wav", "output_norm"):
            if hasattr(ssl, name):
                setattr(self, name, getattr(ssl, name))

    @property
    def downsampler(self):
        """The downsampler."""
        return self._downsampler[0]

    def before(self, wavs):
        """The waveform the backbone sees."""
        return self.downsampler(wavs)

    def after(self, features):
        """The features the head sees (frames repeated back with ``upsample``)."""
        return self.downsampler.upsample(features)

    def forward(self, wavs, wav_lens=None):
        """The head's input features."""
        return self.after(self.ssl(self.before(wavs), wav_lens))


class EarlyExit(Strategy):
    """Early exit (``s3brain.early_exit``): a CTC head after every transformer block but the
    last; at evaluation each utterance stops at the first block whose exit is confident enough.
    The strategy holds the heads, the settings and the exit statistics of a pass; the Brain
    decodes (exits are task outputs).

    Arguments
    ---------
    heads : s3brain.early_exit.ExitHeads
        The exit heads.
    training : str
        ``two_step`` (only the exits learn, on a fixed fine-tuned model) or ``joint``.
    criterion : str
        ``entropy`` or ``similarity``.
    threshold : float
        Nats for entropy, cosine for similarity.
    min_layer : int
        The first block allowed to exit.

    Example
    -------
    >>> from s3brain.early_exit import ExitHeads
    >>> strategy = EarlyExit(ExitHeads(hidden_size=8, outputs=5, layers=2))
    >>> strategy.record(2, 0.1, 1.0); strategy.record(3, 0.1, 1.0)
    >>> strategy.stage_stats(None)
    {'exit_block': 2.5, 'exit_rtf': 0.1}
    """

    TRAINING = ("two_step", "joint")

    def __init__(self, heads, training="two_step", criterion="entropy", threshold=0.7,
                 min_layer=1):
        if training not in self.TRAINING:
            raise ValueError(f"exit_training={training!r}: use one of {self.TRAINING}")
        self.heads, self.training, self.criterion = heads, training, criterion
        self.threshold, self.min_layer = threshold, min_layer
        self.stage_start(None)

    def modules(self):
        """See ``Strategy.modules``."""
        return {"exit_heads": self.heads}

    def setup(self, ssl, hparams):
        """Two-step training: backbone and head fixed (the fine-tuned model), only exits learn."""
        if self.training == "two_step":
            for module in (ssl, hparams["model"]):
                module.requires_grad_(False)

    def record(self, block, seconds, audio_seconds):
        """Count one utterance's exit.

        Arguments
        ---------
        block : int
            The block it exited after.
        seconds : float
            Time its early-exit forward took.
        audio_seconds : float
            Its duration.
        """
        self.blocks.append(block)
        self.seconds += seconds
        self.audio_seconds += audio_seconds

    def stage_start(self, stage):
        """See ``Strategy.stage_start``."""
        self.blocks, self.seconds, self.audio_seconds = [], 0.0, 0.0

    def stage_stats(self, stage):
        """See ``Strategy.stage_stats``: mean exit block and real-time factor of the pass."""
        if not self.blocks:
            return {}
        return {"exit_block": sum(self.blocks) / len(self.blocks),
                "exit_rtf": self.seconds / self.audio_seconds}

    def deployed_cost(self, results, ssl, seconds):
        """See ``Strategy.deployed_cost``: FLOPs as deployed, at the mean exit block of the first
        test split (the measured figure, every block run, kept as ``flops_<s>s_all_blocks``)."""
        from s3brain.early_exit import flops_at_exit

        exits = [k for k in results if k.startswith("mean_exit_block_")]
        key = f"flops_{seconds:g}s"
        if exits and results.get(key) is not None:
            results[f"{key}_all_blocks"] = results[key]
            results[key] = flops_at_exit(ssl, results[key], results[exits[0]], seconds=seconds)


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
