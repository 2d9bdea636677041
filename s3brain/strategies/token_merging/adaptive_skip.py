"""Layer-wise adaptive token skipping (SpAtten's cascade token pruning, Wang et al. 2021, "SpAtten:
Efficient Sparse Attention Architecture with Cascade Token and Head Pruning"): the attention-based
skipping baseline of S6-DAMON's token-skipping table (paper 004, Tab. 5). Every block up to the
last skip point adds to each token the attention probability it received, summed over heads and
over the (real) query positions; after each block of ``skip_after``, the ``skip_ratio`` share of
each utterance's remaining tokens with the least cumulative attention are removed for all later
blocks (cascade: a removed token never comes back).

- ``attention_received``: one block's attention probabilities -> what each key token received.
- ``least_attended_keep``: which tokens stay at a skip point (padding never kept, never counted;
  an utterance keeps at least one token).
- ``skipped_blocks``, ``forward_with_skipping``, ``encode_with_skipping``: the backbone's forward
  with the skipping (``s3brain.backbone.families``' opened-up forward; the attention probabilities
  come from forward hooks, the skip runs in a forward pre-hook of the next block, which also hands
  it the padding mask and WavLM's position bias of the shorter sequence, taken between the kept
  tokens' frames).
- ``AdaptiveSkip``: the strategy; ``SkippedTokensBackbone``: its deployed model, for the cost.

Attention probabilities, on every family: a block's attention returns them when it computes them
(WavLM always does: torch's ``multi_head_attention_forward``, the mean over heads broadcast to
every head, so that the sum over heads is the heads' sum; wav2vec2, HuBERT and data2vec-audio
with ``attn_implementation="eager"``); otherwise (the default scaled-dot-product kernel gives
none) they are computed as ``softmax(Q K^T / sqrt(d))`` from the outputs of the attention's own
``q_proj`` and ``k_proj`` (caught by hooks, not computed again), padded keys masked out: the one
cost the skipping adds, counted in the deployed model's FLOPs (``Q K^T`` of each scored block).
In training they are what the attention used (after its dropout, where it returns them).

The CTC head reads the tokens that remain, as after SALAD's dropping
(``s3brain.strategies.token_dropping``): the output has ``lengths`` tokens per utterance, and the
relative lengths say so. On the default schedule (one skip after block 0) the last block keeps
0.517 of the CNN frames, which leaves every test utterance of the embedded corpus at least as many
frames as CTC needs (the CNN gives them at least 2.1 times that); skipping after several blocks at
the same cost leaves fewer.

Example
-------
>>> import torch
>>> probs = torch.tensor([[[[0.5, 0.5, 0.0], [0.75, 0.25, 0.0], [0.25, 0.75, 0.0]]]])  # 1 head
>>> received = attention_received(probs, torch.tensor([[True, True, False]]))
>>> received.tolist()          # the padded query row (the third) counts for nothing
[[1.25, 0.75, 0.0]]
>>> least_attended_keep(received, torch.tensor([2]), torch.tensor([1])).tolist()
[[True, False, False]]
"""

import functools
import logging
from typing import NamedTuple

import torch
from torch import nn

from s3brain.backbone.families import (
    family,
    feature_frames_and_mask,
    hf_model,
    run_blocks,
    transformer_blocks,
)
from s3brain.backbone.wrapper import normalized_input, output_normalized, wav_samples
from s3brain.strategies.token_merging.base import (
    BetweenBlocks,
    WrappedBackbone,
    attention_mask_for,
    bias_at,
    merge_counts,
    merge_ratio_for,
    nominal_kept_share,
)
from s3brain.utils.padding import padded_as_alone

logger = logging.getLogger(__name__)


#: The skip counts and the schedule's share are token merging's: ``floor(skip_ratio * tokens)``
#: removed per utterance at each skip point (at most all but one), and the mean over blocks of the
#: share of the frames each block sees.
skip_counts = merge_counts


__all__ = ["attention_received", "least_attended_keep", "skip_counts", "nominal_kept_share",
           "merge_ratio_for", "SkipForward", "skipped_blocks", "forward_with_skipping",
           "encode_with_skipping", "AdaptiveSkip", "SkippedTokensBackbone"]


def attention_received(probs, mask=None):
    """The attention probability each key token received, summed over heads and over the real
    query positions; zero on padded keys.

    Arguments
    ---------
    probs : torch.Tensor
        ``[batch, heads, queries, keys]``, each query's probabilities over the keys.
    mask : torch.Tensor, optional
        ``[batch, tokens]`` bool, True on real tokens; None when nothing is padded.

    Returns
    -------
    torch.Tensor
        ``[batch, keys]`` float (see the module's example).
    """
    probs = probs.float()
    if mask is None:
        return probs.sum(dim=(1, 2))
    real = mask.to(probs.device)
    received = (probs * real[:, None, :, None]).sum(dim=(1, 2))
    return received * real


def least_attended_keep(scores, lengths, counts):
    """Which tokens stay: each utterance's real tokens less the ``counts`` with the lowest
    ``scores`` (ties: the earlier token goes first); padding is never kept.

    Arguments
    ---------
    scores : torch.Tensor
        ``[batch, tokens]``, the cumulative attention each token received.
    lengths : torch.Tensor
        Real tokens per utterance (integers).
    counts : torch.Tensor
        Tokens removed per utterance (``skip_counts``: at most all but one).

    Returns
    -------
    torch.Tensor
        ``[batch, tokens]`` bool.

    Example
    -------
    >>> scores = torch.tensor([[3.0, 1.0, 2.0, 1.0, 9.0]])
    >>> least_attended_keep(scores, torch.tensor([4]), torch.tensor([2])).tolist()
    [[True, False, True, False, False]]
    """
    batch, width = scores.shape
    index = torch.arange(width, device=scores.device)
    real = index[None, :] < lengths.to(scores.device)[:, None]
    ranked = scores.detach().float().masked_fill(~real, float("inf"))
    order = ranked.argsort(dim=1, stable=True)  # ascending: the least attended first
    rank = torch.empty_like(order).scatter_(1, order, index.expand(batch, -1).contiguous())
    return real & (rank >= counts.to(scores.device).long()[:, None])


def _pack(keep, *tensors):
    """The kept entries of each ``[batch, tokens, ...]`` tensor, in order, padded with zeros to
    the longest kept; and the kept counts."""
    lengths = keep.sum(1)
    width = int(lengths.max())
    index = torch.argsort((~keep).long(), dim=1, stable=True)[:, :width]  # kept first
    valid = torch.arange(width, device=keep.device)[None, :] < lengths[:, None]
    packed = []
    for tensor in tensors:
        at = index.view(*index.shape, *([1] * (tensor.dim() - 2))).expand(
            -1, -1, *tensor.shape[2:])
        gathered = tensor.gather(1, at)
        packed.append(gathered * valid.view(*valid.shape, *([1] * (tensor.dim() - 2))).to(
            gathered.dtype))
    return packed, lengths


class SkipForward(NamedTuple):
    """What ``skipped_blocks`` returns.

    Arguments
    ---------
    hidden : torch.Tensor
        ``[batch, kept tokens, hidden]``, the last block's output on the tokens that remain
        (the large layout's final layer norm applied), each utterance's tokens first.
    lengths : torch.Tensor
        Tokens that remain per utterance.
    positions : torch.Tensor
        ``[batch, kept tokens]`` integers: the CNN frame each remaining token started as.
    scores : torch.Tensor
        ``[batch, kept tokens]`` float: the cumulative attention each remaining token received
        (from the blocks up to the last skip point; zeros when none was scored).
    tokens_per_block : list of int
        Real tokens each block that ran saw, summed over the batch.
    frames : int
        Real CNN frames of the batch.

    Example
    -------
    >>> SkipForward(None, None, None, None, [10, 5], 10).kept_share
    0.75
    """

    hidden: torch.Tensor
    lengths: torch.Tensor
    positions: torch.Tensor
    scores: torch.Tensor
    tokens_per_block: list
    frames: int

    @property
    def kept_share(self):
        """Share of the token-block products computed (1.0 when no block ran)."""
        if not self.tokens_per_block or not self.frames:
            return 1.0
        return sum(self.tokens_per_block) / (len(self.tokens_per_block) * self.frames)


class _SkipBetweenBlocks:
    """Hooks on the blocks of ``model``: the attention probabilities of every block up to the
    last skip point added to each token's score (forward hooks on the attention and its
    ``q_proj``/``k_proj``); before a block that follows a skip point, the least attended tokens
    removed; from then on every block gets the padding mask and (WavLM) the position bias of
    the shorter sequence."""

    def __init__(self, model, hidden, lengths, padded, skip_after, skip_ratio):
        self.model = hf_model(model)
        self.pending = sorted(set(int(i) for i in skip_after)) if skip_ratio > 0 else []
        self.skip_ratio = float(skip_ratio)
        batch, width = hidden.shape[:2]
        self.lengths = lengths.to(hidden.device).long()
        self.positions = torch.arange(width, device=hidden.device).expand(batch, -1).clone()
        self.scores = torch.zeros(batch, width, device=hidden.device)
        self.padded = padded
        self.scored = False  # some block's probabilities are in the scores
        self.skipped = False
        self.attention_mask = self.full_bias = None
        self.tokens_per_block = []
        self.handles = []
        self.projections = {}

    def __enter__(self):
        names = family(self.model).attention  # q_proj, k_proj, v_proj, out_proj
        last = self.pending[-1] if self.pending else -1
        for index, block in enumerate(transformer_blocks(self.model)):
            self.handles.append(block.register_forward_pre_hook(
                functools.partial(self._before_block, index), with_kwargs=True))
            if index > last:
                continue  # no skip comes after it: its probabilities are not needed
            for name in names[:2]:
                self.handles.append(block.get_submodule(name).register_forward_hook(
                    functools.partial(self._keep_projection, name)))
            attention = block.get_submodule(names[0].rsplit(".", 1)[0])
            self.handles.append(attention.register_forward_hook(self._after_attention))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles, self.projections = [], {}

    def _mask(self):
        """``[batch, tokens]`` bool on the real tokens."""
        index = torch.arange(self.scores.shape[1], device=self.scores.device)
        return index[None, :] < self.lengths[:, None]

    def _keep_projection(self, name, module, args, output):
        """Keep a ``q_proj``/``k_proj`` output for the block's probabilities."""
        self.projections[name] = output.detach()

    def _after_attention(self, attention, args, output):
        """Add what each token received in this block's attention to its score."""
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        with torch.no_grad():  # which tokens stay is a choice, not a function to differentiate
            if weights is None:  # the fused kernel: softmax(Q K^T / sqrt(d)) from the projections
                weights = self._probabilities(attention)
            self.scores += attention_received(weights.detach(), self._mask())
        self.projections = {}
        self.scored = True

    def _probabilities(self, attention):
        """``softmax(Q K^T / sqrt(d))`` from the kept projections, padded keys masked out."""
        q_name, k_name = family(self.model).attention[:2]
        # float32 also under autocast: the scores only rank the tokens, but must not overflow
        query, key = self.projections[q_name].float(), self.projections[k_name].float()
        batch, width, channels = query.shape
        heads = attention.num_heads
        query = query.view(batch, width, heads, -1).transpose(1, 2)
        key = key.view(batch, width, heads, -1).transpose(1, 2)
        logits = torch.matmul(query, key.transpose(2, 3)) * (channels // heads) ** -0.5
        logits = logits.masked_fill(~self._mask()[:, None, None, :], float("-inf"))
        return logits.softmax(dim=-1)

    def _before_block(self, index, block, args, kwargs):
        """Skip after the pending skip points, then hand the block the shorter sequence."""
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.full_bias is None and kwargs.get("position_bias") is not None:
            self.full_bias = kwargs["position_bias"]  # block 0's, over every frame
        # LayerDrop may skip a skip point's block: the skip then follows the next block that ran
        while self.pending and self.pending[0] < index and self.scored:
            self.pending.pop(0)
            counts = skip_counts(self.lengths, self.skip_ratio)
            if int(counts.max()) <= 0:
                continue
            keep = least_attended_keep(self.scores, self.lengths, counts)
            (hidden, self.positions, self.scores), self.lengths = _pack(
                keep, hidden, self.positions, self.scores)
            self.skipped = True
            mask = self._mask() if self.padded or int(self.lengths.min()) < hidden.shape[1] \
                else None
            self.attention_mask = attention_mask_for(self.model, hidden, mask)
        self.tokens_per_block.append(int(self.lengths.sum()))
        if not self.skipped:
            return None
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
        kwargs["attention_mask"] = self.attention_mask
        if self.full_bias is not None:
            kwargs["position_bias"] = bias_at(self.full_bias, self.positions.float())
        return args, kwargs


def skipped_blocks(model, frames, skip_after, skip_ratio):
    """The transformer's blocks on ``frames`` (``s3brain.backbone.families.run_blocks``) with
    ``skip_ratio`` of the remaining tokens, the least attended, removed after each block of
    ``skip_after``.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``s3brain.backbone.families.FAMILIES``.
    frames : s3brain.backbone.families.Frames
        The transformer's input (``feature_frames_and_mask``).
    skip_after : list of int
        Blocks (0-based) after which tokens are removed.
    skip_ratio : float
        Share of the remaining tokens removed at each of them.

    Returns
    -------
    SkipForward

    Example
    -------
    >>> from s3brain.backbone.families import Frames
    >>> from s3brain.backbone.tiny_models import tiny_model
    >>> model = tiny_model("hubert", "large").eval()
    >>> with torch.no_grad():
    ...     out = skipped_blocks(model, Frames(torch.randn(1, 10, 32), None, None, None), [0], 0.5)
    >>> out.hidden.shape, out.tokens_per_block, out.positions.shape
    (torch.Size([1, 5, 32]), [10, 5], torch.Size([1, 5]))
    """
    hidden, lengths = frames.hidden, frames.lengths
    if lengths is None:
        lengths = torch.full((hidden.shape[0],), hidden.shape[1], dtype=torch.long)
    with _SkipBetweenBlocks(model, hidden, lengths, frames.mask is not None, skip_after,
                            skip_ratio) as skipping:
        last = run_blocks(model, hidden, frames.mask)
    return SkipForward(last, skipping.lengths, skipping.positions, skipping.scores,
                       skipping.tokens_per_block,
                       int(lengths.sum()))


def forward_with_skipping(model, wav, wav_lengths, skip_after, skip_ratio):
    """A transformers SSL model's forward with adaptive skipping between its blocks: the CNN
    and the transformer's input as the model makes them (``s3brain.backbone.families``), then
    ``skipped_blocks``.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``s3brain.backbone.families.FAMILIES``.
    wav : torch.Tensor
        ``[batch, samples]``, as the model reads it.
    wav_lengths : torch.Tensor or None
        Valid samples of each utterance (integers); None when nothing is padded.
    skip_after : list of int
        Blocks (0-based) after which tokens are removed.
    skip_ratio : float
        Share of the remaining tokens removed at each of them.

    Returns
    -------
    SkipForward

    Example
    -------
    >>> from s3brain.backbone.tiny_models import tiny_model
    >>> model = tiny_model("wavlm", "base").eval()
    >>> with torch.no_grad():
    ...     out = forward_with_skipping(model, torch.randn(2, 16000), torch.tensor([16000, 8000]),
    ...                                 skip_after=[0], skip_ratio=0.5)
    >>> out.hidden.shape, out.lengths.tolist(), out.tokens_per_block
    (torch.Size([2, 25, 32]), [25, 12], [73, 37])
    """
    return skipped_blocks(model, feature_frames_and_mask(model, wav, wav_lengths), skip_after,
                          skip_ratio)


def encode_with_skipping(ssl, wavs, wav_lens, skip_after, skip_ratio):
    """SpeechBrain's ``Wav2Vec2`` lobe forward (``ssl``) with adaptive skipping between its
    blocks: its input normalisation and ``output_norm`` around ``forward_with_skipping``.

    Arguments
    ---------
    ssl : torch.nn.Module
        The SpeechBrain wrapper.
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor or None
        Relative lengths; None when nothing is padded.
    skip_after : list of int
        Blocks (0-based) after which tokens are removed.
    skip_ratio : float
        Share of the remaining tokens removed at each of them.

    Returns
    -------
    tuple
        ``(features [batch, kept tokens, hidden], relative lengths, SkipForward)``: the
        features of the tokens that remain, the lengths relative to the longest.
    """
    samples = None if wav_lens is None else wav_samples(wavs, wav_lens)
    out = forward_with_skipping(ssl.model, normalized_input(ssl, wavs), samples, skip_after,
                                skip_ratio)
    hidden = output_normalized(ssl, out.hidden)
    lengths = out.lengths.to(hidden.device)
    return hidden, lengths.float() / lengths.max().clamp(min=1), out


class AdaptiveSkip(BetweenBlocks):
    """Layer-wise adaptive token skipping (SpAtten's cascade token pruning): after each block of
    ``skip_after``, ``skip_ratio`` of each utterance's remaining tokens are removed, those that
    received the least attention (summed over heads, query positions and the blocks so far);
    the CTC head reads the tokens that remain. Trains with the skipping; counts the share of
    token-block products computed (``kept_share``, comparable with token dropping's).

    Arguments
    ---------
    skip_ratio : float
        Share of the remaining tokens removed at each skip point, in [0, 1).
    skip_after : list of int
        Blocks (0-based) after which tokens are removed; the last block is not one.

    Example
    -------
    >>> skipping = AdaptiveSkip(skip_ratio=0.5, skip_after=[0])
    >>> skipping.changes_forward, skipping.sparsity, skipping.nominal_kept_share(2)
    (True, 0.0, 0.75)
    """

    keys, verb = ("skip_ratio", "skip_after"), "removed (the least attended)"

    def __init__(self, skip_ratio=0.483, skip_after=(0,)):
        super().__init__(skip_ratio, skip_after)
        self.skip_ratio, self.skip_after = self.ratio, self.after

    def encode(self, ssl, wavs, wav_lens, stage):
        """See ``Strategy.encode``: the features of the tokens that remain, their lengths."""
        ssl = getattr(ssl, "module", ssl)  # DDP
        feats, lens, out = encode_with_skipping(ssl, wavs, wav_lens, self.skip_after,
                                                self.skip_ratio)
        self.count(out)
        return feats, lens

    def deployable(self, ssl):
        """See ``Strategy.deployable``: the backbone that skips as in training."""
        return SkippedTokensBackbone(ssl, self.skip_after, self.skip_ratio)

    def export(self, deployment):
        """See ``Strategy.export``: the blocks skip tokens as in training."""
        return {"encode": SkippedTokensCTC(self.skip_after, self.skip_ratio)}


class SkippedTokensBackbone(WrappedBackbone):
    """A backbone that skips tokens between its blocks (``encode_with_skipping``), as deployed:
    the cost of 10 s of audio is measured on the shorter sequences the later blocks see, the
    attention products it adds to score the tokens included (the count kept depends only on
    the length, so the measured forward keeps what a test utterance of that length keeps). Not
    exportable to ONNX (``onnx_exportable``: the skip chooses tokens by sorting); decodes as
    the run does (int8 through torch's).

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper.
    skip_after : list of int
        Blocks (0-based) after which tokens are removed.
    skip_ratio : float
        Share of the remaining tokens removed at each of them.

    Example
    -------
    >>> from torch import nn
    >>> from s3brain.backbone.tiny_models import tiny_model
    >>> class Wrapper(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.model = tiny_model("wav2vec2", "base").eval()
    ...         self.normalize_wav, self.output_norm = False, False
    >>> SkippedTokensBackbone(Wrapper(), [0], 0.5)(torch.randn(1, 16000)).shape
    torch.Size([1, 25, 32])
    """

    #: The skip is deterministic: the deployed copy decodes as the run does.
    decodes_as_run = True

    def __init__(self, ssl, skip_after, skip_ratio):
        super().__init__(ssl)
        self.skip_after, self.skip_ratio = list(skip_after), float(skip_ratio)

    def forward(self, wavs, wav_lens=None):
        """Features of the tokens that remain, ``[batch, kept tokens, hidden]``."""
        return encode_with_skipping(self, wavs, wav_lens, self.skip_after, self.skip_ratio)[0]


class SkippedTokensCTC(nn.Module):
    """Adaptive skip in an inference folder's CTC model (``AdaptiveSkip.export``): the
    backbone's blocks run with the skipping between them, the CTC head reads the tokens that
    remain; each utterance's log-probabilities are padded with certain blanks
    (``s3brain.utils.padding.blank_padded``) so that greedy CTC decodes it as alone.

    Arguments
    ---------
    skip_after : list of int
        Blocks (0-based) after which tokens are removed.
    skip_ratio : float
        Share of the remaining tokens removed at each of them.

    Example
    -------
    >>> SkippedTokensCTC([0], 0.5).export_args()
    {'skip_after': [0], 'skip_ratio': 0.5}
    """

    def __init__(self, skip_after, skip_ratio):
        super().__init__()
        self.skip_after, self.skip_ratio = [int(i) for i in skip_after], float(skip_ratio)

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"skip_after": self.skip_after, "skip_ratio": self.skip_ratio}

    def forward(self, encoder, wavs, wav_lens):
        """CTC log-probabilities of ``encoder`` (its ``backbone``, ``log_probs``,
        ``blank_index``) on the tokens that remain.

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
        features, lens, _ = encode_with_skipping(encoder.backbone, wavs, wav_lens,
                                                 self.skip_after, self.skip_ratio)
        return padded_as_alone(encoder.log_probs(features), lens, wav_lens, encoder.blank_index)
