"""SALAD: detect and drop non-salient audio tokens before the transformer (S6-DAMON, paper 004).

- ``salient_labels``: the teacher's pseudo labels. A CNN frame is salient (1) when the teacher's
  greedy CTC output there is a non-blank symbol that differs from the previous frame's; blank
  frames and repeats of the previous frame's symbol are non-salient (0).
- ``SaladDetector``: a few light 1-D convolutions over the CNN features, one logit per frame.
- ``recall_aware_bce``: binary cross entropy with weight ``alpha`` on salient frames, so that
  missing a salient frame costs more than keeping a non-salient one.
- ``drop_tokens``: remove the ``skip_ratio`` share of the frames detected as non-salient, the
  most confident first, keeping order; every salient frame stays. ``uniform_keep`` and
  ``random_keep`` are the skip baselines at a matched rate.
- ``forward_with_dropping``: a transformers SSL model's forward with the dropping between the
  CNN feature extractor and the transformer; returns the shorter outputs and their lengths.

Example
-------
>>> import torch
>>> salient_labels(torch.tensor([[0, 3, 3, 0, 3, 5, 5, 0]]), blank=0).tolist()
[[0, 1, 0, 0, 1, 1, 0, 0]]
>>> feats = torch.arange(6.).view(1, 6, 1)
>>> prob = torch.tensor([[0.9, 0.1, 0.2, 0.8, 0.05, 0.3]])   # P(salient)
>>> out, lengths, kept = drop_tokens(feats, torch.tensor([6]), prob, skip_ratio=0.5)
>>> out.squeeze(-1).tolist(), lengths.tolist()
([[0.0, 2.0, 3.0, 5.0]], [4])
"""


import torch
from speechbrain.dataio.dataio import length_to_mask
from torch import nn

from s3brain.backbone.families import block_outputs, feature_frames_and_mask, pack_kept, run_blocks  # noqa: F401 (salad's API)
from s3brain.backbone.wrapper import normalized_input, output_normalized, wav_samples
from s3brain.strategies.base import ExportError, Strategy
from s3brain.utils.padding import padded_as_alone


def salient_labels(frame_ids, blank=0):
    """1 where the frame starts a new non-blank symbol, else 0.

    Arguments
    ---------
    frame_ids : torch.Tensor
        ``[batch, frames]``, the teacher's greedy CTC output per frame.
    blank : int
        The CTC blank.

    Returns
    -------
    torch.Tensor
        ``[batch, frames]`` of 0 and 1 (see the module's example).
    """
    previous = torch.cat([torch.full_like(frame_ids[:, :1], blank), frame_ids[:, :-1]], dim=1)
    return ((frame_ids != blank) & (frame_ids != previous)).long()


class SaladDetector(nn.Module):
    """Salient-token detector: ``layers`` 1-D convolutions (kernel ``kernel``, GELU) over CNN
    features ``[batch, frames, in_channels]``, then a per-frame logit ``[batch, frames]``.

    Arguments
    ---------
    in_channels : int
        Channels of the backbone's CNN features (``conv_dim[-1]``).
    channels : int
        Channels of the hidden convolutions.
    layers : int
        Number of convolutions, the last one giving the logit.
    kernel : int
        Kernel size of every convolution (odd: the output keeps the frame count).

    Example
    -------
    >>> detector = SaladDetector(in_channels=8, channels=16, layers=2)
    >>> detector(torch.randn(2, 50, 8)).shape
    torch.Size([2, 50])
    """

    def __init__(self, in_channels, channels=128, layers=4, kernel=3):
        super().__init__()
        self.config = {"in_channels": in_channels, "channels": channels, "layers": layers,
                       "kernel": kernel}
        blocks, width = [], in_channels
        for _ in range(layers - 1):
            blocks += [nn.Conv1d(width, channels, kernel, padding=kernel // 2), nn.GELU()]
            width = channels
        blocks.append(nn.Conv1d(width, 1, kernel, padding=kernel // 2))
        self.net = nn.Sequential(nn.LayerNorm(in_channels), _Transpose(), *blocks)

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return dict(self.config)

    def forward(self, features):
        """Per-frame salience logits.

        Arguments
        ---------
        features : torch.Tensor
            CNN features, ``[batch, frames, in_channels]``.

        Returns
        -------
        logits : torch.Tensor
            ``[batch, frames]``; ``sigmoid(logits)`` is the probability that a frame is salient.
        """
        return self.net(features).squeeze(1)


class _Transpose(nn.Module):
    """Swap time and channels, ``[batch, time, channels] -> [batch, channels, time]``, between
    the LayerNorm and the convolutions of ``SaladDetector``."""

    def forward(self, x):
        """``x`` with its dimensions 1 and 2 swapped."""
        return x.transpose(1, 2)


def recall_aware_bce(logits, labels, lengths=None, alpha=10.0):
    """Mean BCE over real frames, salient frames weighted ``alpha`` and the others 1.

    Arguments
    ---------
    logits : torch.Tensor
        ``[batch, frames]``, the detector's output.
    labels : torch.Tensor
        ``[batch, frames]``, 1 on salient frames (``salient_labels``).
    lengths : torch.Tensor, optional
        Real frames per utterance; None: every frame is real.
    alpha : float
        Weight of the salient frames.

    Returns
    -------
    torch.Tensor
        The loss, a scalar.

    Example
    -------
    >>> logits = torch.tensor([[5.0, -5.0, 9.0]])
    >>> loss = recall_aware_bce(logits, torch.tensor([[1, 0, 0]]), torch.tensor([2]))
    >>> float(loss) < 0.01   # the third frame is padding
    True
    """
    weights = torch.where(labels.bool(), torch.full_like(logits, alpha), torch.ones_like(logits))
    if lengths is not None:
        weights = weights * length_to_mask(lengths, logits.shape[1], dtype=torch.bool,
                                           device=logits.device)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), weight=weights,
                                                          reduction="sum")
    return loss / weights.sum()


def detection_stats(logits, labels, lengths=None):
    """Accuracy and recall on salient frames of a detector's decisions (logit > 0).

    Arguments
    ---------
    logits : torch.Tensor
        ``[batch, frames]``, the detector's output.
    labels : torch.Tensor
        ``[batch, frames]``, 1 on salient frames.
    lengths : torch.Tensor, optional
        Real frames per utterance; None: every frame is real.

    Returns
    -------
    dict
        ``accuracy``, ``salient_recall``, ``salient_share``.

    Example
    -------
    >>> stats = detection_stats(torch.tensor([[1.0, -1.0, 1.0, 1.0]]),
    ...                         torch.tensor([[1, 1, 0, 1]]), torch.tensor([3]))
    >>> stats["accuracy"], stats["salient_recall"]
    (0.3333333432674408, 0.5)
    """
    mask = torch.ones_like(labels, dtype=torch.bool)
    if lengths is not None:
        mask = length_to_mask(lengths, labels.shape[1], dtype=torch.bool, device=labels.device)
    predicted, truth = (logits > 0)[mask], labels.bool()[mask]
    accuracy = float((predicted == truth).float().mean())
    recall = float((predicted & truth).sum() / truth.sum().clamp(min=1))
    return {"accuracy": accuracy, "salient_recall": recall, "salient_share": float(truth.float().mean())}


def keep_mask(prob_salient, lengths, skip_ratio):
    """Frames to keep: all but the ``skip_ratio`` share (rounded down) of each utterance's
    detected non-salient frames (P(salient) < 0.5), those with the lowest P(salient) first.

    Arguments
    ---------
    prob_salient : torch.Tensor
        ``[batch, frames]``, P(salient) of each frame.
    lengths : torch.Tensor
        Real frames per utterance.
    skip_ratio : float
        Share of the non-salient frames removed.

    Returns
    -------
    torch.Tensor
        ``[batch, frames]`` bool, never True on padding.

    Example
    -------
    >>> keep_mask(torch.tensor([[0.9, 0.1, 0.3, 0.2]]), torch.tensor([4]), 0.5).tolist()
    [[True, False, True, True]]
    """
    keep = torch.zeros_like(prob_salient, dtype=torch.bool)
    for b, length in enumerate(lengths.tolist()):
        p = prob_salient[b, :length]
        keep[b, :length] = True
        non_salient = (p < 0.5).nonzero().squeeze(1)
        drop = int(skip_ratio * non_salient.numel())
        if drop:
            keep[b, non_salient[p[non_salient].argsort()[:drop]]] = False
    return keep


def drop_tokens(features, lengths, prob_salient, skip_ratio):
    """Remove detected non-salient frames (``keep_mask``), the others packed in order.

    Arguments
    ---------
    features : torch.Tensor
        ``[batch, frames, channels]``.
    lengths : torch.Tensor
        Real frames per utterance.
    prob_salient : torch.Tensor
        ``[batch, frames]``, P(salient) of each frame.
    skip_ratio : float
        Share of the non-salient frames removed.

    Returns
    -------
    tuple of torch.Tensor
        ``(features, lengths, keep)`` (see the module's example).
    """
    keep = keep_mask(prob_salient, lengths, skip_ratio)
    out, new_lengths = pack_kept(features, keep)
    return out, new_lengths, keep


def uniform_keep(lengths, frames, drop_share):
    """Baseline: drop every frame whose running share passes ``drop_share`` (evenly spaced).

    Arguments
    ---------
    lengths : torch.Tensor
        Real frames per utterance.
    frames : int
        Frames of the batch (padding included).
    drop_share : float
        Share of the frames dropped.

    Returns
    -------
    torch.Tensor
        ``[batch, frames]`` bool, never True on padding.

    Example
    -------
    >>> uniform_keep(torch.tensor([4, 3]), 4, 0.5).tolist()
    [[False, True, False, True], [False, True, False, False]]
    """
    index = torch.arange(frames, dtype=torch.float64, device=lengths.device)
    keep = torch.floor((index + 1) * (1 - drop_share)) > torch.floor(index * (1 - drop_share))
    keep = keep[None, :].expand(len(lengths), frames).clone()
    return keep & length_to_mask(lengths, frames, dtype=torch.bool)


def random_keep(lengths, frames, drop_share, generator=None):
    """Baseline: drop a random ``drop_share`` of each utterance's frames.

    Arguments
    ---------
    lengths : torch.Tensor
        Real frames per utterance.
    frames : int
        Frames of the batch (padding included).
    drop_share : float
        Share of each utterance's frames dropped (rounded down).
    generator : torch.Generator, optional
        The random generator (a CPU one).

    Returns
    -------
    torch.Tensor
        ``[batch, frames]`` bool, never True on padding.

    Example
    -------
    >>> random_keep(torch.tensor([4, 2]), 4, 0.5).sum(1).tolist()
    [2, 1]
    """
    keep = torch.zeros(len(lengths), frames, dtype=torch.bool)  # the generator's device, the CPU
    for b, length in enumerate(lengths.tolist()):
        kept = length - int(drop_share * length)
        keep[b, torch.randperm(length, generator=generator)[:kept]] = True
    return keep.to(lengths.device)


def forward_with_dropping(model, wav, wav_lengths, keep_fn, output_hidden_states=False):
    """Forward of a transformers SSL model that drops CNN frames before the transformer
    (``s3brain.backbone.families``' opened-up forward, with ``keep_fn`` between the CNN and the
    feature projection).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``s3brain.backbone.families.FAMILIES``.
    wav : torch.Tensor
        ``[batch, samples]``.
    wav_lengths : torch.Tensor
        Valid samples of each utterance (integers).
    keep_fn : callable
        ``(cnn_features [B, T, C], frame_lengths [B]) -> keep [B, T]`` bool.
    output_hidden_states : bool
        Also return every transformer block's output (a list).

    Returns
    -------
    tuple
        ``(hidden [B, T', D], lengths [B], keep [B, T])``, T' the longest kept length, and with
        ``output_hidden_states`` a fourth item, the blocks' outputs; SpecAugment masking
        applies in training as in the model's own forward.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
    >>> hidden, lengths, keep = forward_with_dropping(model, torch.randn(2, 1600),
    ...     torch.tensor([1600, 800]), lambda f, n: uniform_keep(n, f.shape[1], 0.5))
    >>> hidden.shape, lengths.tolist()
    (torch.Size([2, 79, 32]), [79, 39])
    """
    frames = feature_frames_and_mask(model, wav, wav_lengths, keep_fn)
    out = run_blocks(model, frames.hidden, frames.mask, every_block=output_hidden_states)
    if output_hidden_states:
        return out[0], frames.lengths, frames.keep, out[1]
    return out, frames.lengths, frames.keep


class TokenDropper(nn.Module):
    """Which CNN frames of a batch reach the transformer, as a module of a recipe.

    ``method``: ``"salad"`` drops the ``skip_ratio`` share of the frames the (frozen) ``detector``
    calls non-salient, most confident first; ``"uniform"`` and ``"random"`` drop ``drop_share`` of
    every utterance's frames, evenly spaced or at random (the skip baselines). The module counts
    the frames it keeps (``kept_share``) so that a run can report its measured saving.

    Arguments
    ---------
    method : str
        ``salad``, ``uniform`` or ``random``.
    skip_ratio : float
        For ``salad``: share of the non-salient frames removed.
    drop_share : float
        For ``uniform`` and ``random``: share of all frames removed.
    detector : SaladDetector, optional
        The trained detector (``load_detector``); needed by ``salad``, frozen here.
    seed : int
        Seed of the ``random`` baseline's generator.

    Example
    -------
    >>> dropper = TokenDropper("uniform", drop_share=0.5)
    >>> dropper(torch.zeros(1, 10, 4), torch.tensor([10])).sum().item(), dropper.kept_share
    (5, 0.5)
    """

    METHODS = ("salad", "uniform", "random")

    def __init__(self, method="salad", skip_ratio=0.6, drop_share=0.0, detector=None, seed=0):
        super().__init__()
        if method not in self.METHODS:
            raise ValueError(f"token dropping method {method!r}: use one of {self.METHODS}")
        if method == "salad" and detector is None:
            raise ValueError("token dropping with SALAD needs a detector (salad_detector)")
        if not 0.0 <= (skip_ratio if method == "salad" else drop_share) <= 1.0:
            raise ValueError("skip_ratio and drop_share are shares between 0 and 1")
        self.method, self.skip_ratio, self.drop_share = method, skip_ratio, drop_share
        self.detector = detector
        if detector is not None:
            detector.requires_grad_(False)
        self.generator = torch.Generator().manual_seed(seed)
        self.reset_counts()

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"method": self.method, "skip_ratio": self.skip_ratio,
                "drop_share": self.drop_share, "detector": self.detector}

    def reset_counts(self):
        """Start counting kept frames anew (a recipe calls it at the start of each stage).

        Returns
        -------
        None
        """
        self.frames_kept, self.frames_total = 0, 0

    @property
    def kept_share(self):
        """Share of the frames seen since ``reset_counts`` that were kept (0 before any).

        Returns
        -------
        float
        """
        return self.frames_kept / max(self.frames_total, 1)

    def train(self, mode=True):
        """Set the training mode, keeping the frozen detector in eval mode whatever ``mode``.

        Arguments
        ---------
        mode : bool
            Training (True) or evaluation (False).

        Returns
        -------
        self : TokenDropper
        """
        super().train(mode)
        if self.detector is not None:
            self.detector.eval()
        return self

    def forward(self, features, lengths):
        """Choose the frames to keep, and count them.

        Arguments
        ---------
        features : torch.Tensor
            CNN features, ``[batch, frames, channels]``.
        lengths : torch.Tensor
            Valid frames of each utterance, ``[batch]`` (integers).

        Returns
        -------
        keep : torch.Tensor
            Boolean, ``[batch, frames]``: True for the frames that go on to the transformer
            (never a padding frame).
        """
        frames = features.shape[1]
        if self.method == "salad":
            with torch.no_grad():
                prob = torch.sigmoid(self.detector(features))
            keep = keep_mask(prob, lengths, self.skip_ratio)
        elif self.method == "uniform":
            keep = uniform_keep(lengths.to(features.device), frames, self.drop_share)
        else:
            keep = random_keep(lengths.to(features.device), frames, self.drop_share, self.generator)
        self.frames_kept += int(keep.sum())
        self.frames_total += int(lengths.sum())
        return keep


def encode_with_dropping(ssl, wavs, wav_lens, dropper, blocks=False):
    """SpeechBrain's ``Wav2Vec2`` lobe forward (``ssl``) with ``dropper`` between its CNN and
    its transformer: the features the lobe gives (its input normalisation and ``output_norm``
    included, ``s3brain.backbone.wrapper_forward``'s steps) for the kept frames only.

    Arguments
    ---------
    ssl : torch.nn.Module
        The SpeechBrain wrapper.
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor or None
        Relative lengths.
    dropper : callable
        ``(CNN features, frame lengths) -> keep`` (a ``TokenDropper``).
    blocks : bool
        Also return every transformer block's output.

    Returns
    -------
    tuple
        ``(features, relative lengths, keep)``, and with ``blocks`` a fourth item, the list of
        the blocks' outputs.
    """
    out = forward_with_dropping(ssl.model, normalized_input(ssl, wavs), wav_samples(wavs, wav_lens),
                                dropper, output_hidden_states=blocks)
    hidden, lengths, keep = out[:3]
    hidden = output_normalized(ssl, hidden)
    return (hidden, lengths.float() / lengths.max().clamp(min=1), keep, *out[3:])


def save_detector(path, detector, **info):
    """Save a trained detector with its shape (and any ``info``: teacher, stats), for
    ``load_detector``.

    Arguments
    ---------
    path : str or Path
        The file to write.
    detector : SaladDetector
        The detector.
    **info
        Anything to keep beside it.
    """
    torch.save({"config": detector.config, "state_dict": detector.state_dict(), "info": info}, path)


def load_detector(path):
    """The ``SaladDetector`` saved by ``save_detector``, in eval mode.

    Arguments
    ---------
    path : str or Path
        The file, or a folder holding ``salad_detector.pt``.

    Returns
    -------
    SaladDetector

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_detector(f"{tmp}/salad_detector.pt", SaladDetector(8, channels=4))
    ...     load_detector(tmp).config["channels"]
    4
    """
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        path = path / "salad_detector.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no SALAD detector at {path}: train one first (python recipes/LibriSpeech/"
            f"train_salad.py hparams/salad/detector.yaml) or give --salad_detector=<its folder>")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    detector = SaladDetector(**saved["config"])
    detector.load_state_dict(saved["state_dict"])
    return detector.eval()


class TokenDropping(Strategy):
    """SALAD, uniform or random token dropping (``s3brain.strategies.token_dropping.TokenDropper``): CNN frames
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
    detector : s3brain.strategies.token_dropping.SaladDetector, optional
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

        self.dropper = TokenDropper(method, skip_ratio, drop_share, detector, seed)
        self.collect_blocks = False  # set by Distillation: keep every block's output in training
        self.kept = self.blocks = None
        self.deployed_kept_share = None  # measured on the first test pass

    def modules(self):
        """See ``Strategy.modules``."""
        return {"token_dropping": self.dropper}

    def encode(self, ssl, wavs, wav_lens, stage):
        """See ``Strategy.encode``."""

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
        """See ``Strategy.deployable``: for the cost, the transformer on the share of frames the
        first test pass kept (which frames does not change it), the detector's cost counted."""
        return DroppedFramesBackbone(ssl, self.dropper.detector, self.deployed_kept_share)

    def frame_chooser(self):
        """See ``Strategy.frame_chooser``: the run's dropper (SALAD's detector, or uniform)."""
        return self.dropper

    def export(self, deployment):
        """See ``Strategy.export``: the run's dropper (its detector, its share) chooses the
        frames."""
        if self.dropper.method == "random":
            raise ExportError("random token dropping is a baseline whose kept frames come from a "
                              "random generator: its transcripts cannot be reproduced; export a "
                              "uniform or SALAD token-dropping run")
        return {"encode": DroppedFramesCTC(self.dropper)}


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
    kept_share : float or None
        Share of the frames the transformer sees (None: not measured, the forward refuses).

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

        if self.kept_share is None:
            raise ValueError("token dropping: no test pass has measured the share of frames kept")
        if self._detector[0] is not None:
            self._detector[0](features)
        return uniform_keep(lengths, features.shape[1], 1.0 - self.kept_share)

    def forward(self, wavs, wav_lens=None):
        """Features of the frames kept, ``[batch, kept frames, hidden]``."""

        return encode_with_dropping(self.ssl, wavs, wav_lens, self.keep)[0]


class DroppedFramesCTC(nn.Module):
    """Token dropping in an inference folder's CTC model (``TokenDropping.export``): the run's
    dropper (SALAD with its detector, or uniform) chooses the CNN frames the transformer sees;
    each utterance's log-probabilities are padded with certain blanks
    (``s3brain.utils.padding.blank_padded``) so that greedy CTC decodes it as alone.

    Arguments
    ---------
    token_dropping : TokenDropper
        The run's dropper.

    Example
    -------
    >>> DroppedFramesCTC(TokenDropper("uniform", drop_share=0.5)).export_args()["token_dropping"].method
    'uniform'
    """

    def __init__(self, token_dropping):
        super().__init__()
        self.token_dropping = token_dropping

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"token_dropping": self.token_dropping}

    def forward(self, encoder, wavs, wav_lens):
        """CTC log-probabilities of ``encoder`` (its ``backbone``, ``log_probs``,
        ``blank_index``) on the frames kept.

        Arguments
        ---------
        encoder : s3brain.deployment.modules.CTCEncoder
            The CTC model this part belongs to.
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor
            Relative lengths.

        Returns
        -------
        torch.Tensor
            ``[batch, frames, outputs]``.
        """
        features, lens, _ = encode_with_dropping(encoder.backbone, wavs, wav_lens,
                                                 self.token_dropping)
        return padded_as_alone(encoder.log_probs(features), lens, wav_lens, encoder.blank_index)
