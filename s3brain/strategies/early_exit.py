"""Early exit: a CTC head after every transformer block, and inference that really stops at the
exit block (the comparative study, paper 003).

``layer_outputs`` runs the encoder of a transformers SSL model block by block as a generator, so
the caller decides after each block whether to go on: blocks after the exit are never computed.
Exit criteria: ``entropy`` (mean frame entropy of the exit head's output below the threshold) and
``similarity`` (mean cosine similarity between a block's input and output frames above the
threshold).

Example
-------
>>> import torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=3,
...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
>>> heads = ExitHeads(hidden_size=32, outputs=5, layers=3)
>>> wav = torch.randn(1, 1600)
>>> _, layer = early_exit(model, heads, wav, "entropy", threshold=float("inf"))
>>> _, last = early_exit(model, heads, wav, "entropy", threshold=0.0)
>>> layer, last
(1, 3)
"""

import time

import speechbrain as sb
import torch
from torch import nn

from s3brain.backbone.audio import backbone_rate
from s3brain.backbone.families import (
    feature_frames_and_mask,
    final_layer_norm,
    hf_model,
    iter_blocks,
    transformer_blocks,
)
from s3brain.backbone.wrapper import normalized_input, output_normalized
from s3brain.strategies.base import Strategy
from s3brain.utils.checkpoint import unwrapped
from s3brain.utils.efficiency import count_flops
from s3brain.utils.padding import blank_padded

CRITERIA = ("entropy", "similarity")


class ExitHeads(nn.ModuleList):
    """One linear CTC head per transformer block (block i's head reads block i's output).

    Arguments
    ---------
    hidden_size : int
        Width of the blocks' outputs.
    outputs : int
        Output classes of each head (CTC tokens, blank included).
    layers : int
        Number of heads.

    Example
    -------
    >>> heads = ExitHeads(hidden_size=8, outputs=5, layers=2)
    >>> len(heads), heads[0](torch.zeros(1, 3, 8)).shape
    (2, torch.Size([1, 3, 5]))
    """

    def __init__(self, hidden_size, outputs, layers):
        super().__init__([nn.Linear(hidden_size, outputs) for _ in range(layers)])

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"hidden_size": self[0].in_features, "outputs": self[0].out_features,
                "layers": len(self)}


def exit_head_count(ssl):
    """Exit heads a recipe needs: one per transformer block but the last (whose exit is the
    model's own CTC head).

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone (a transformers model or a SpeechBrain wrapper).

    Returns
    -------
    int
    """
    return len(transformer_blocks(ssl)) - 1


def layer_outputs(model, wav, wav_lengths=None):
    """Yield ``(block input, block output)`` for each transformer block in turn, so that the
    caller may stop after any block (``s3brain.backbone.families.iter_blocks``). The last output
    equals the model's ``last_hidden_state``.

    Works for every family of ``s3brain.backbone.families.FAMILIES`` in both layouts: in the large
    layout (stable layer norm) each output goes through the encoder's final layer norm, as the last
    one does in the model (``exit_features``).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model, or a SpeechBrain wrapper of one.
    wav : torch.Tensor
        ``[batch, samples]``, as the model reads it (one utterance, or a batch).
    wav_lengths : torch.Tensor, optional
        Valid samples of each utterance of a padded batch.

    Yields
    ------
    tuple of torch.Tensor
        ``(block input, exit features of the block output)``, ``[batch, frames, hidden]``.

    Returns
    -------
    generator
        Of the pairs above, one per block.

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> model = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
    >>> wav = torch.randn(1, 1600)
    >>> with torch.no_grad():
    ...     outputs = [after for _, after in layer_outputs(model, wav)]
    ...     last = model(wav).last_hidden_state
    >>> len(outputs), torch.allclose(outputs[-1], last, atol=1e-6)
    (2, True)
    """
    frames = feature_frames_and_mask(model, wav, wav_lengths)
    for block_input, block_output in iter_blocks(model, frames.hidden, frames.mask):
        yield block_input, exit_features(model, block_output)


def exit_features(model, block_output):
    """What an exit after a block reads: the block's output as the encoder would end with it
    (``s3brain.backbone.families.final_layer_norm``: through the encoder's final layer norm in the
    large layout, where the intermediate outputs are never normalised; as is in the base layout).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model, or a SpeechBrain wrapper of one.
    block_output : torch.Tensor
        A block's output, ``[..., hidden]``.

    Returns
    -------
    torch.Tensor
        The same shape.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=8, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=16, conv_dim=(8,), conv_stride=(5,),
    ...     conv_kernel=(10,), num_feat_extract_layers=1, do_stable_layer_norm=True,
    ...     feat_extract_norm="layer", num_conv_pos_embedding_groups=2))
    >>> out = exit_features(model, torch.randn(1, 3, 8))
    >>> torch.allclose(out.mean(-1), torch.zeros(1, 3), atol=1e-5)   # the large layout
    True
    """
    return final_layer_norm(model, block_output)


def exit_inputs(model, hiddens, heads):
    """The inputs of the exit heads from the backbone's hidden states ``[layers + 1, B, T, D]``
    (``output_all_hiddens``): each intermediate block's ``exit_features``. A clear error when
    the backbone did not return one output per block.

    Arguments
    ---------
    model : torch.nn.Module
        The backbone (a transformers model or a SpeechBrain wrapper).
    hiddens : torch.Tensor
        ``[layers + 1, batch, frames, hidden]``: the first block's input, then every block's
        output.
    heads : ExitHeads
        The exit heads (one per block but the last).

    Returns
    -------
    list of torch.Tensor
        One ``[batch, frames, hidden]`` per exit head.
    """
    blocks = len(transformer_blocks(model))
    if len(hiddens) != blocks + 1 or len(heads) != blocks - 1:
        raise ValueError(f"early exit needs {blocks + 1} hidden states and {blocks - 1} exit "
                         f"heads (one per block but the last), got {len(hiddens)} and "
                         f"{len(heads)}: load the backbone with output_all_hiddens and no "
                         f"LayerDrop (s3brain.backbone.load_ssl does)")
    return [exit_features(model, h) for h in hiddens[1:-1]]


def block_flops(model, seconds=10, sample_rate=16000):
    """FLOPs of one transformer block on the frames of ``seconds`` of audio.

    Arguments
    ---------
    model : torch.nn.Module
        The backbone (a transformers model or a SpeechBrain wrapper).
    seconds : float
        Audio length.
    sample_rate : int
        Samples per second.

    Returns
    -------
    int
    """

    model = hf_model(model)
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(seconds * sample_rate)))
    param = next(model.parameters())
    hidden = torch.zeros(1, frames, model.config.hidden_size, device=param.device,
                         dtype=param.dtype)
    first = transformer_blocks(model)[0]
    return count_flops(lambda: first(hidden))


def flops_at_exit(model, flops_all_blocks, mean_exit_block, seconds=10):
    """FLOPs for ``seconds`` of audio when the transformer stops after ``mean_exit_block``
    blocks on average: the all-block figure less the blocks never run (the exit heads' own
    linear layers are not counted).

    Arguments
    ---------
    model : torch.nn.Module
        The backbone (a transformers model or a SpeechBrain wrapper).
    flops_all_blocks : int
        FLOPs of the whole model on ``seconds`` of audio.
    mean_exit_block : float
        Mean exit block (1-based).
    seconds : float
        Audio length.

    Returns
    -------
    int
    """
    blocks = len(transformer_blocks(model))
    return int(flops_all_blocks - (blocks - mean_exit_block) * block_flops(model, seconds))


def mean_entropy(log_probs):
    """Mean over frames of the entropy (nats) of each frame's output distribution.

    Arguments
    ---------
    log_probs : torch.Tensor
        ``[..., classes]`` log-probabilities.

    Returns
    -------
    float

    Example
    -------
    >>> round(mean_entropy(torch.full((1, 2, 4), 0.25).log()), 4)   # log(4)
    1.3863
    """
    return float(-(log_probs.exp() * log_probs).sum(-1).mean())


def mean_similarity(before, after):
    """Mean over frames of the cosine similarity of a block's input and output.

    Arguments
    ---------
    before : torch.Tensor
        ``[..., hidden]``, the block's input.
    after : torch.Tensor
        ``[..., hidden]``, its output.

    Returns
    -------
    float

    Example
    -------
    >>> x = torch.randn(1, 3, 4)
    >>> round(mean_similarity(x, 2 * x), 4)
    1.0
    """
    return float(nn.functional.cosine_similarity(before, after, dim=-1).mean())


@torch.no_grad()
def early_exit(model, heads, wav, criterion, threshold, min_layer=1, head_fn=None):
    """Run blocks until the criterion says stop (the blocks after the exit never run).

    Arguments
    ---------
    model : torch.nn.Module
        The backbone (a transformers model or a SpeechBrain wrapper).
    heads : ExitHeads
        The exit heads.
    wav : torch.Tensor
        ``[1, samples]``, as the model reads it (normalised if it should be).
    criterion : str
        ``entropy`` (stop when the exit's mean frame entropy is below ``threshold``) or
        ``similarity`` (stop when a block's input and output are more alike than
        ``threshold``).
    threshold : float
        The criterion's threshold.
    min_layer : int
        No exit before this block (1-based).
    head_fn : callable, optional
        ``head_fn(i, hidden)`` maps block i's output to logits (default: ``heads[i - 1]``); the
        last block always exits.

    Returns
    -------
    tuple
        ``(log_probs [1, frames, outputs], exit block)``, the block 1-based (see the module's
        example).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    head_fn = head_fn or (lambda i, hidden: heads[i - 1](hidden))
    layers = len(transformer_blocks(model))
    for i, (before, after) in enumerate(layer_outputs(model, wav), start=1):
        last = i == layers
        if criterion == "similarity" and not last:
            if i < min_layer or mean_similarity(before, after) <= threshold:
                continue
            return head_fn(i, after).log_softmax(-1), i
        log_probs = head_fn(i, after).log_softmax(-1)
        if last or (i >= min_layer and mean_entropy(log_probs) < threshold):
            return log_probs, i
    raise RuntimeError("the encoder has no blocks")


class EarlyExit(Strategy):
    """Early exit (``s3brain.strategies.early_exit``): a CTC head after every transformer block but the
    last; at evaluation each utterance stops at the first block whose exit is confident enough.
    The strategy holds the heads, the settings and the exit statistics of a pass; the Brain
    decodes (exits are task outputs).

    Arguments
    ---------
    heads : s3brain.strategies.early_exit.ExitHeads
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
    >>> from s3brain.strategies.early_exit import ExitHeads
    >>> strategy = EarlyExit(ExitHeads(hidden_size=8, outputs=5, layers=2))
    >>> strategy.record(2, 0.1, 1.0); strategy.record(3, 0.1, 1.0)
    >>> strategy.stage_stats(None)
    {'exit_block': 2.5, 'exit_rtf': 0.1}
    """

    decodes_alone = True
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

    def export(self, deployment):
        """See ``Strategy.export``: each utterance alone through the blocks until its exit."""
        return {"encode": ExitCTC(self.heads, self.criterion, self.threshold, self.min_layer)}

    def deployed_cost(self, results, ssl, seconds):
        """See ``Strategy.deployed_cost``: FLOPs as deployed, at the mean exit block of the first
        test split (the measured figure, every block run, kept as ``flops_<s>s_all_blocks``)."""

        exits = [k for k in results if k.startswith("mean_exit_block_")]
        key = f"flops_{seconds:g}s"
        if exits and results.get(key) is not None:
            results[f"{key}_all_blocks"] = results[key]
            results[key] = flops_at_exit(ssl, results[key], results[exits[0]], seconds=seconds)


def early_exit_of(strategies):
    """The run's ``EarlyExit`` strategy, or None.

    Arguments
    ---------
    strategies : list of Strategy
        The run's strategies.

    Returns
    -------
    EarlyExit or None
    """
    return next((s for s in strategies if isinstance(s, EarlyExit)), None)


def exit_outputs(strategy, ssl, feats, log_softmax):
    """Split a backbone output into the last block's features and the exits' log-probabilities
    (with an early-exit strategy the backbone returns every block's output).

    Arguments
    ---------
    strategy : EarlyExit or None
        The run's early exit.
    ssl : torch.nn.Module
        The backbone wrapper.
    feats : torch.Tensor
        The backbone's output.
    log_softmax : callable
        Logits -> log-probabilities.

    Returns
    -------
    tuple
        ``(features of the last block, list of exit log-probs or None)``.
    """
    if strategy is None:
        return feats, None
    exits = [log_softmax(head(h)) for head, h in
             zip(strategy.heads, exit_inputs(unwrapped(ssl), feats, strategy.heads))]
    return feats[-1], exits


def with_exit_loss(strategy, loss, exits, ctc_loss):
    """The loss with the exits' mean CTC loss: in place of it for two-step training (only the
    exits learn), added for joint training.

    Arguments
    ---------
    strategy : EarlyExit
        The run's early exit.
    loss : torch.Tensor
        The final head's loss (with the other strategies' terms).
    exits : list of torch.Tensor
        The exits' log-probabilities.
    ctc_loss : callable
        ``log_probs -> CTC loss`` of the batch.

    Returns
    -------
    torch.Tensor
    """
    exit_loss = sum(ctc_loss(e) for e in exits) / len(exits)
    return exit_loss if strategy.training == "two_step" else loss + exit_loss


@torch.no_grad()
def decode_at_exits(strategy, ssl, head, wavs, wav_lens, blank_index):
    """Greedy CTC of each utterance at its early exit (one utterance at a time, as deployed);
    the strategy records each exit block and the time taken.

    Arguments
    ---------
    strategy : EarlyExit
        The run's early exit (heads, criterion, threshold).
    ssl : torch.nn.Module
        The backbone wrapper.
    head : callable
        The final head: last block's features -> logits.
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor
        Relative lengths.
    blank_index : int
        The CTC blank.

    Returns
    -------
    list of list of int
        Token ids of each utterance.
    """
    ssl = unwrapped(ssl)
    blocks = len(transformer_blocks(ssl))

    def head_fn(i, hidden):
        """Log-probabilities of block ``i``'s exit (the final head after the last block)."""
        hidden = output_normalized(ssl, hidden)
        if i == blocks:
            return head(hidden)
        return strategy.heads[i - 1](hidden)

    hyps = []
    for wav, rel in zip(wavs, wav_lens):
        wav = wav[: int(round(float(rel) * wavs.shape[1]))].unsqueeze(0)
        wav = normalized_input(ssl, wav)
        start = time.perf_counter()
        log_probs, block = early_exit(ssl.model, strategy.heads, wav, strategy.criterion,
                                      strategy.threshold, strategy.min_layer, head_fn)
        strategy.record(block, time.perf_counter() - start, wav.shape[1] / backbone_rate(ssl))
        hyps += sb.decoders.ctc_greedy_decode(log_probs, torch.ones(1, device=log_probs.device),
                                              blank_id=blank_index)
    return hyps


class ExitCTC(nn.Module):
    """Early exit in an inference folder's CTC model (``EarlyExit.export``): each utterance
    alone through the blocks until the first exit confident enough (``early_exit``), its
    log-probabilities padded with certain blanks (``s3brain.utils.padding.blank_padded``) so
    that greedy CTC decodes it as alone; ``exit_blocks`` holds the last batch's exit blocks.

    Arguments
    ---------
    exit_heads : ExitHeads
        The exit heads.
    criterion : str
        ``entropy`` or ``similarity``.
    threshold : float
        The criterion's threshold.
    min_layer : int
        The first block allowed to exit.

    Example
    -------
    >>> ExitCTC(ExitHeads(8, 5, 2), "entropy", 0.5).export_args()["criterion"]
    'entropy'
    """

    def __init__(self, exit_heads, criterion="entropy", threshold=0.7, min_layer=1):
        super().__init__()
        self.exit_heads, self.criterion = exit_heads, criterion
        self.threshold, self.min_layer = float(threshold), int(min_layer)
        self.exit_blocks = []

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"exit_heads": self.exit_heads, "criterion": self.criterion,
                "threshold": self.threshold, "min_layer": self.min_layer}

    def forward(self, encoder, wavs, wav_lens):
        """CTC log-probabilities of ``encoder`` (its ``backbone``, ``head``, ``ctc_lin``,
        ``blank_index``), each utterance from its exit.

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
        backbone = encoder.backbone
        blocks = len(transformer_blocks(backbone.model))

        def head_fn(i, hidden):
            """Logits of block ``i``'s exit (the final head after the last block)."""
            hidden = output_normalized(backbone, hidden)
            if i == blocks:
                return encoder.ctc_lin(encoder.head(hidden))
            return self.exit_heads[i - 1](hidden)

        outputs, self.exit_blocks = [], []
        for wav, rel in zip(wavs, wav_lens):
            wav = wav[: int(round(float(rel) * wavs.shape[1]))].unsqueeze(0)
            log_probs, block = early_exit(backbone.model, self.exit_heads,
                                          normalized_input(backbone, wav), self.criterion,
                                          self.threshold, self.min_layer, head_fn)
            outputs.append(log_probs[0])
            self.exit_blocks.append(block)
        return blank_padded(outputs, wav_lens, encoder.blank_index)
