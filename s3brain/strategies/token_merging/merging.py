"""Token merging between transformer blocks (A-ToMe style, Li et al. 2023, "Accelerating
Transducers through Adjacent Token Merging"): after chosen blocks, the most similar ADJACENT
tokens of each utterance are merged into one, their average weighted by how many CNN frames each
already holds, so that the later blocks run on a shorter sequence.

- ``merge_adjacent``: one merging step. Of each utterance's adjacent pairs, the ``count`` whose
  tokens are most alike (cosine similarity of the block's output) are joined; pairs that share a
  token join into one run. Order is kept, a pair never crosses into the padding, every token
  records the frames it holds (``sizes``) and each CNN frame the token it is in (``frame_token``).
- ``merge_counts``: pairs merged at one step, ``floor(merge_ratio * tokens)`` per utterance.
- ``nominal_kept_share`` / ``merge_ratio_for``: the share of token-block products the blocks
  compute under a schedule (``merge_after``, ``merge_ratio``), and the ratio that gives a target.
- ``merged_blocks``, ``forward_with_merging``, ``encode_with_merging``: the backbone's forward
  with the merging (``s3brain.backbone.families``' opened-up forward; the merge runs in a forward
  pre-hook of the next block, which also hands it the padding mask and WavLM's position bias of
  the shorter sequence, WavLM's taken between the frames at the merged tokens' centres).
- ``TokenMerging``: the strategy; ``MergedTokensBackbone``: its deployed model, for the cost.

The output is unmerged: each merged token is repeated over the frames it holds, so the head and
CTC see the CNN's frame count, as with the plain backbone. A-ToMe keeps the merged sequence for
its transducer; character CTC needs at least one frame per character (one more per repeated
character), and on the embedded corpus the default schedule leaves the last block 35 % of the
frames: 28 of the 200 test-clean utterances and 153 of the 200 test-other ones would then have
fewer frames than their transcripts need (the CNN gives them 2.6 and 2.1 times what CTC needs at
the least, 3.2 and 2.6 times at the median). Repeated back, every alignment CTC could make on the
plain backbone stays possible, for the cost of the head on the repeated frames.

Example
-------
>>> import torch
>>> hidden = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.0, 0.0]]])
>>> tokens = start_tokens(hidden, torch.tensor([3]))      # 3 real frames, 1 padding
>>> merged = merge_adjacent(tokens, torch.tensor([1]))    # the most alike pair: frames 0 and 1
>>> merged.hidden[0, :2].tolist(), merged.sizes[0, :2].tolist(), merged.lengths.tolist()
([[1.0, 0.05000000074505806], [0.0, 1.0]], [2.0, 1.0], [2])
>>> merged.frame_token.tolist()
[[0, 0, 1, 1]]
"""

import functools
import logging
from typing import NamedTuple

import torch
from torch import nn

from s3brain.backbone.families import (
    feature_frames_and_mask,
    hf_model,
    run_blocks,
    transformer_blocks,
)
from s3brain.backbone.wrapper import (
    feature_frames,
    normalized_input,
    output_normalized,
    wav_samples,
)
from s3brain.strategies.token_merging.base import (
    BetweenBlocks,
    WrappedBackbone,
    attention_mask_for,
    bias_at,
    merge_counts,
)

logger = logging.getLogger(__name__)


class Tokens(NamedTuple):
    """The tokens of a batch between two blocks, and what each holds.

    Arguments
    ---------
    hidden : torch.Tensor
        ``[batch, tokens, hidden]``; each utterance's tokens first, zeros after them.
    lengths : torch.Tensor
        Tokens per utterance, ``[batch]`` (integers).
    sizes : torch.Tensor
        ``[batch, tokens]`` float: CNN frames each token holds (0 on padding).
    centres : torch.Tensor
        ``[batch, tokens]`` float: the mean index of the frames each token holds.
    frame_token : torch.Tensor
        ``[batch, frames]`` integers: the token each CNN frame is in.

    Example
    -------
    >>> start_tokens(torch.zeros(1, 3, 2), torch.tensor([2])).sizes.tolist()
    [[1.0, 1.0, 0.0]]
    """

    hidden: torch.Tensor
    lengths: torch.Tensor
    sizes: torch.Tensor
    centres: torch.Tensor
    frame_token: torch.Tensor


def start_tokens(hidden, lengths):
    """Every CNN frame its own token (before any merging).

    Arguments
    ---------
    hidden : torch.Tensor
        ``[batch, frames, hidden]``.
    lengths : torch.Tensor
        Real frames per utterance (integers).

    Returns
    -------
    Tokens
        (See the class's example.)
    """
    batch, frames = hidden.shape[:2]
    index = torch.arange(frames, device=hidden.device)
    real = index[None, :] < lengths.to(hidden.device)[:, None]
    return Tokens(hidden, lengths.to(hidden.device).long(), real.to(hidden.dtype),
                  index[None, :].to(hidden.dtype).expand(batch, -1).clone(),
                  index[None, :].expand(batch, -1).clone())


def merge_adjacent(tokens, counts):
    """One merging step: in each utterance, the ``counts`` adjacent pairs whose tokens are most
    alike (cosine similarity; ties to the earlier pair) are joined, pairs sharing a token into
    one run; a run becomes the average of its tokens weighted by their ``sizes``. Tokens keep
    their order, and a pair never reaches into the padding.

    Arguments
    ---------
    tokens : Tokens
        The tokens (``start_tokens``, or an earlier step's output).
    counts : torch.Tensor
        Pairs merged per utterance, ``[batch]`` (``merge_counts``).

    Returns
    -------
    Tokens
        ``lengths - counts`` tokens per utterance, the batch padded to the longest; ``tokens``
        itself when nothing is merged.

    Example
    -------
    >>> hidden = torch.tensor([[[1.0], [3.0], [-1.0]]])
    >>> tokens = start_tokens(hidden, torch.tensor([3]))._replace(
    ...     sizes=torch.tensor([[3.0, 1.0, 1.0]]))
    >>> merge_adjacent(tokens, torch.tensor([1])).hidden.tolist()   # (3 x 1 + 1 x 3) / 4
    [[[1.5], [-1.0]]]
    """
    hidden, lengths, sizes, centres, frame_token = tokens
    batch, width, channels = hidden.shape
    counts = counts.to(lengths.device).long()
    if width < 2 or int(counts.max()) <= 0:
        return tokens
    with torch.no_grad():  # which pairs merge is a choice, not a function to differentiate
        unit = nn.functional.normalize(hidden.detach().float(), dim=-1)
        similarity = (unit[:, :-1] * unit[:, 1:]).sum(-1)  # pair j: tokens j and j + 1
        pair = torch.arange(width - 1, device=hidden.device)
        inside = pair[None, :] < (lengths - 1)[:, None]
        similarity = similarity.masked_fill(~inside, float("-inf"))
        order = similarity.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, pair.expand(batch, -1).contiguous())
        joined = (rank < counts[:, None]) & inside
        starts = torch.cat([torch.ones_like(joined[:, :1]), ~joined], dim=1)
        group = starts.long().cumsum(1) - 1  # [batch, width]: each token's merged token
    new_lengths = lengths - counts
    new_width = int(new_lengths.max())
    weights = sizes.unsqueeze(-1)
    summed = hidden.new_zeros(batch, width, channels).scatter_add(
        1, group.unsqueeze(-1).expand(-1, -1, channels), hidden * weights)
    new_sizes = sizes.new_zeros(batch, width).scatter_add(1, group, sizes)
    new_centres = centres.new_zeros(batch, width).scatter_add(1, group, centres * sizes)
    divisor = torch.where(new_sizes > 0, new_sizes, torch.ones_like(new_sizes))
    merged = (summed / divisor.unsqueeze(-1))[:, :new_width]
    return Tokens(merged, new_lengths, new_sizes[:, :new_width],
                  (new_centres / divisor)[:, :new_width],
                  group.gather(1, frame_token).clamp(max=new_width - 1))


def unmerge(hidden, frame_token):
    """Each token repeated over the CNN frames it holds: back to the frame count.

    Arguments
    ---------
    hidden : torch.Tensor
        ``[batch, tokens, hidden]``.
    frame_token : torch.Tensor
        ``[batch, frames]``, the token of each frame (``Tokens.frame_token``).

    Returns
    -------
    torch.Tensor
        ``[batch, frames, hidden]``.

    Example
    -------
    >>> unmerge(torch.tensor([[[1.0], [2.0]]]), torch.tensor([[0, 0, 1]])).tolist()
    [[[1.0], [1.0], [2.0]]]
    """
    return hidden.gather(1, frame_token.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


class MergedForward(NamedTuple):
    """What ``forward_with_merging`` returns.

    Arguments
    ---------
    hidden : torch.Tensor
        ``[batch, frames, hidden]``, the last block's output unmerged to the CNN's frames.
    lengths : torch.Tensor or None
        CNN frames per utterance (None when none were given).
    tokens : Tokens
        The tokens after the last merge.
    tokens_per_block : list of int
        Real tokens each block that ran saw, summed over the batch.
    frames : int
        Real CNN frames of the batch.

    Example
    -------
    >>> MergedForward(None, None, None, [10, 5], 10).kept_share
    0.75
    """

    hidden: torch.Tensor
    lengths: torch.Tensor
    tokens: Tokens
    tokens_per_block: list
    frames: int

    @property
    def kept_share(self):
        """Share of the token-block products computed (1.0 when no block ran)."""
        if not self.tokens_per_block or not self.frames:
            return 1.0
        return sum(self.tokens_per_block) / (len(self.tokens_per_block) * self.frames)


class _MergeBetweenBlocks:
    """Forward pre-hooks on every block of ``model``: before a block that follows a merge point,
    merge its input tokens; from then on hand every block the padding mask and (WavLM) the
    position bias of the shorter sequence, as the opened-up forward made them for the full one.
    """

    def __init__(self, model, tokens, padded, merge_after, merge_ratio):
        self.model = hf_model(model)
        self.tokens, self.padded = tokens, padded
        self.pending = sorted(set(int(i) for i in merge_after)) if merge_ratio > 0 else []
        self.merge_ratio = float(merge_ratio)
        self.merged = False
        self.attention_mask = self.full_bias = None
        self.tokens_per_block = []
        self.handles = []

    def __enter__(self):
        for index, block in enumerate(transformer_blocks(self.model)):
            self.handles.append(block.register_forward_pre_hook(
                functools.partial(self._before_block, index), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _before_block(self, index, block, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.full_bias is None and kwargs.get("position_bias") is not None:
            self.full_bias = kwargs["position_bias"]  # block 0's, over every frame
        while self.pending and self.pending[0] < index:  # LayerDrop may skip a merge block
            self.pending.pop(0)
            before = self.tokens._replace(hidden=hidden)
            self.tokens = merge_adjacent(before, merge_counts(before.lengths, self.merge_ratio))
            if self.tokens is not before:
                hidden, self.merged = self.tokens.hidden, True
                self.attention_mask = attention_mask_for(self.model, hidden, self._mask())
        self.tokens_per_block.append(int(self.tokens.lengths.sum()))
        if not self.merged:
            return None
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
        kwargs["attention_mask"] = self.attention_mask
        if self.full_bias is not None:
            kwargs["position_bias"] = bias_at(self.full_bias, self.tokens.centres)
        return args, kwargs

    def _mask(self):
        """``[batch, tokens]`` bool on the real tokens; None when nothing was padded."""
        if not self.padded:
            return None
        index = torch.arange(self.tokens.hidden.shape[1], device=self.tokens.hidden.device)
        return index[None, :] < self.tokens.lengths[:, None]


def merged_blocks(model, frames, merge_after, merge_ratio):
    """The transformer's blocks on ``frames`` (``s3brain.backbone.families.run_blocks``) with
    ``merge_ratio`` of the tokens merged after each block of ``merge_after``, the last block's
    output unmerged to the frame count.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``s3brain.backbone.families.FAMILIES``.
    frames : s3brain.backbone.families.Frames
        The transformer's input (``feature_frames_and_mask``).
    merge_after : list of int
        Blocks (0-based) after which tokens are merged.
    merge_ratio : float
        Share of the tokens merged away at each of them.

    Returns
    -------
    MergedForward

    Example
    -------
    >>> from s3brain.backbone.families import Frames
    >>> from s3brain.backbone.tiny_models import tiny_model
    >>> model = tiny_model("hubert", "large").eval()
    >>> with torch.no_grad():
    ...     out = merged_blocks(model, Frames(torch.randn(1, 10, 32), None, None, None), [0], 0.5)
    >>> out.hidden.shape, out.tokens_per_block
    (torch.Size([1, 10, 32]), [10, 5])
    """
    hidden, lengths = frames.hidden, frames.lengths
    if lengths is None:
        lengths = torch.full((hidden.shape[0],), hidden.shape[1], dtype=torch.long)
    tokens = start_tokens(hidden, lengths)
    with _MergeBetweenBlocks(model, tokens, frames.mask is not None, merge_after,
                             merge_ratio) as merging:
        last = run_blocks(model, hidden, frames.mask)
    return MergedForward(unmerge(last, merging.tokens.frame_token), frames.lengths,
                         merging.tokens, merging.tokens_per_block, int(lengths.sum()))


def forward_with_merging(model, wav, wav_lengths, merge_after, merge_ratio):
    """A transformers SSL model's forward with token merging between its blocks: the CNN and
    the transformer's input as the model makes them (``s3brain.backbone.families``), then
    ``merged_blocks``.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``s3brain.backbone.families.FAMILIES``.
    wav : torch.Tensor
        ``[batch, samples]``, as the model reads it.
    wav_lengths : torch.Tensor or None
        Valid samples of each utterance (integers); None when nothing is padded.
    merge_after : list of int
        Blocks (0-based) after which tokens are merged.
    merge_ratio : float
        Share of the tokens merged away at each of them.

    Returns
    -------
    MergedForward

    Example
    -------
    >>> from s3brain.backbone.tiny_models import tiny_model
    >>> model = tiny_model("wavlm", "base").eval()
    >>> with torch.no_grad():
    ...     out = forward_with_merging(model, torch.randn(2, 16000), torch.tensor([16000, 8000]),
    ...                                merge_after=[0], merge_ratio=0.5)
    >>> out.hidden.shape, out.tokens.lengths.tolist(), out.tokens_per_block
    (torch.Size([2, 49, 32]), [25, 12], [73, 37])
    """
    return merged_blocks(model, feature_frames_and_mask(model, wav, wav_lengths), merge_after,
                         merge_ratio)


def encode_with_merging(ssl, wavs, wav_lens, merge_after, merge_ratio):
    """SpeechBrain's ``Wav2Vec2`` lobe forward (``ssl``) with token merging between its blocks:
    its input normalisation and ``output_norm`` around ``forward_with_merging``.

    Arguments
    ---------
    ssl : torch.nn.Module
        The SpeechBrain wrapper.
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor or None
        Relative lengths; None when nothing is padded.
    merge_after : list of int
        Blocks (0-based) after which tokens are merged.
    merge_ratio : float
        Share of the tokens merged away at each of them.

    Returns
    -------
    tuple
        ``(features [batch, frames, hidden], MergedForward)``: the features have the CNN's frame
        count, so the relative lengths stay those of the input.
    """
    samples = None if wav_lens is None else wav_samples(wavs, wav_lens)
    out = forward_with_merging(ssl.model, normalized_input(ssl, wavs), samples, merge_after,
                               merge_ratio)
    return output_normalized(ssl, out.hidden), out


class TokenMerging(BetweenBlocks):
    """Token merging (A-ToMe style) between transformer blocks: after each block of
    ``merge_after``, ``merge_ratio`` of each utterance's tokens are merged away, the most
    similar adjacent ones first; the output is repeated back to the CNN's frames for CTC.
    Trains with the merging (so the blocks learn to read merged tokens); counts the share of
    token-block products computed (``kept_share``, comparable with token dropping's).

    Arguments
    ---------
    merge_ratio : float
        Share of the tokens merged away at each merge point, in [0, 1).
    merge_after : list of int
        Blocks (0-based) after which tokens are merged; the last block is not one.

    Example
    -------
    >>> merging = TokenMerging(merge_ratio=0.5, merge_after=[0])
    >>> merging.changes_forward, merging.sparsity, merging.nominal_kept_share(2)
    (True, 0.0, 0.75)
    """

    keys, verb = ("merge_ratio", "merge_after"), "merged"

    def __init__(self, merge_ratio=0.483, merge_after=(0,)):
        super().__init__(merge_ratio, merge_after)
        self.merge_ratio, self.merge_after = self.ratio, self.after

    def encode(self, ssl, wavs, wav_lens, stage):
        """See ``Strategy.encode``: the lengths stay (the output is unmerged)."""
        ssl = getattr(ssl, "module", ssl)  # DDP
        feats, out = encode_with_merging(ssl, wavs, wav_lens, self.merge_after, self.merge_ratio)
        self.count(out)
        return feats, wav_lens

    def output_frames(self, model, samples):
        """See ``Strategy.output_frames``: the CNN's frame count (the output is unmerged)."""

        return feature_frames(model, samples)

    def deployable(self, ssl):
        """See ``Strategy.deployable``: the backbone that merges as in training."""
        return MergedTokensBackbone(ssl, self.merge_after, self.merge_ratio)

    def export(self, deployment):
        """See ``Strategy.export``: the blocks merge tokens as in training."""
        return {"encode": MergedTokensCTC(self.merge_after, self.merge_ratio)}


class MergedTokensBackbone(WrappedBackbone):
    """A backbone that merges tokens between its blocks (``encode_with_merging``), as deployed:
    the cost of 10 s of audio is measured on the shorter sequences the later blocks see. Not
    exportable to ONNX (``onnx_exportable``: the merge chooses pairs by sorting).

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper.
    merge_after : list of int
        Blocks (0-based) after which tokens are merged.
    merge_ratio : float
        Share of the tokens merged away at each of them.

    Example
    -------
    >>> from s3brain.backbone.tiny_models import tiny_model
    >>> class Wrapper(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.model = tiny_model("wav2vec2", "base").eval()
    ...         self.normalize_wav, self.output_norm = False, False
    >>> MergedTokensBackbone(Wrapper(), [0], 0.5)(torch.randn(1, 16000)).shape
    torch.Size([1, 49, 32])
    """

    #: The merge is deterministic: the deployed copy decodes as the run does (its int8 error
    #: rates are measured, through torch's int8 since it does not export).
    decodes_as_run = True

    def __init__(self, ssl, merge_after, merge_ratio):
        super().__init__(ssl)
        self.merge_after, self.merge_ratio = list(merge_after), float(merge_ratio)

    def forward(self, wavs, wav_lens=None):
        """Features at the CNN's frame count, ``[batch, frames, hidden]``."""
        return encode_with_merging(self, wavs, wav_lens, self.merge_after, self.merge_ratio)[0]


class MergedTokensCTC(nn.Module):
    """Token merging in an inference folder's CTC model (``TokenMerging.export``): the
    backbone's blocks run with the merging between them, the output repeated back to the CNN's
    frames for the CTC head.

    Arguments
    ---------
    merge_after : list of int
        Blocks (0-based) after which tokens are merged.
    merge_ratio : float
        Share of the tokens merged away at each of them.

    Example
    -------
    >>> MergedTokensCTC([0], 0.5).export_args()
    {'merge_after': [0], 'merge_ratio': 0.5}
    """

    def __init__(self, merge_after, merge_ratio):
        super().__init__()
        self.merge_after, self.merge_ratio = [int(i) for i in merge_after], float(merge_ratio)

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"merge_after": self.merge_after, "merge_ratio": self.merge_ratio}

    def forward(self, encoder, wavs, wav_lens=None):
        """CTC log-probabilities of ``encoder`` (its ``backbone`` and ``log_probs``).

        Arguments
        ---------
        encoder : s3brain.deployment.modules.CTCEncoder
            The CTC model this part belongs to.
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor, optional
            Relative lengths.

        Returns
        -------
        torch.Tensor
            ``[batch, frames, outputs]``.
        """
        features = encode_with_merging(encoder.backbone, wavs, wav_lens, self.merge_after,
                                       self.merge_ratio)[0]
        return encoder.log_probs(features)
