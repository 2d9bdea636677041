"""What token merging and adaptive skip share: the strategy base that runs the blocks with
a token reduction between them (``BetweenBlocks``), the deployed backbone's base
(``WrappedBackbone``), the attention mask and WavLM's position bias at the kept tokens, and
the arithmetic of how many tokens each step removes.

Example
-------
>>> import torch
>>> merge_counts(torch.tensor([499, 10, 1, 0]), 0.3).tolist()
[149, 3, 0, 0]
"""

import logging

import torch
from torch import nn

from s3brain.backbone.families import family, transformer_blocks
from s3brain.strategies.base import Strategy

logger = logging.getLogger(__name__)


def attention_mask_for(model, hidden, mask):
    """The blocks' attention mask for ``hidden`` with padding ``mask``, in the family's form
    (as ``s3brain.backbone.families`` makes it before the first block)."""
    if family(model).position_bias:  # WavLM's attention reads the padding mask itself
        return mask
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=model.encoder.config, inputs_embeds=hidden,
                                     attention_mask=mask)


def bias_at(full_bias, centres):
    """WavLM's relative position bias ``[batch x heads, frames, frames]`` between the frames at
    the merged tokens' centres: ``[batch x heads, tokens, tokens]``."""
    batch, width = centres.shape
    frames = full_bias.shape[-1]
    bias = full_bias.view(batch, -1, frames, frames)
    at = centres.round().long().clamp(0, frames - 1)
    rows = bias.gather(2, at[:, None, :, None].expand(-1, bias.shape[1], -1, frames))
    both = rows.gather(3, at[:, None, None, :].expand(-1, bias.shape[1], width, -1))
    return both.reshape(-1, width, width)


class BetweenBlocks(Strategy):
    """What the strategies that shorten the token sequence between transformer blocks share
    (``TokenMerging``, ``s3brain.strategies.token_merging.adaptive_skip.AdaptiveSkip``): a
    ``ratio`` of the tokens goes after each block of ``after``, checked against the backbone's
    blocks; the test pass counts the share of token-block products computed (``kept_share``,
    comparable with token dropping's). A subclass names its keys (``keys``: ratio, after) and what
    it does to the tokens (``verb``), and its ``encode`` adds each forward's counts with ``count``.

    Arguments
    ---------
    ratio : float
        Share of the tokens that go at each point, in [0, 1).
    after : list of int
        Blocks (0-based) after which they go; the last block is not one.

    Example
    -------
    >>> BetweenBlocks(0.5, [0]).nominal_kept_share(2)
    0.75
    """

    changes_forward = True
    keys, verb = ("ratio", "after"), "removed"

    def __init__(self, ratio, after):
        if not 0.0 <= float(ratio) < 1.0:
            raise ValueError(f"{self.keys[0]}={ratio}: a share of the tokens, in [0, 1)")
        self.ratio, self.after = float(ratio), sorted(set(int(i) for i in after))
        self.stage_start(None)

    def nominal_kept_share(self, blocks):
        """``nominal_kept_share`` of this schedule on ``blocks`` blocks.

        Arguments
        ---------
        blocks : int
            Transformer blocks.

        Returns
        -------
        float
        """
        return nominal_kept_share(blocks, self.after, self.ratio)

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``: check the points against the backbone's blocks."""
        blocks = len(transformer_blocks(ssl))
        wrong = [i for i in self.after if not 0 <= i < blocks - 1]
        if wrong:
            raise ValueError(f"{self.keys[1]}={self.after}: the backbone has {blocks} blocks, "
                             f"so tokens go after blocks 0 to {blocks - 2}; not {wrong}")
        logger.info("%s: %.1f %% of the tokens %s after blocks %s; the blocks see %.1f %% of "
                    "the token-block products (nominal)", type(self).__name__,
                    100 * self.ratio, self.verb, self.after,
                    100 * self.nominal_kept_share(blocks))

    def count(self, out):
        """Add one forward's token-block products (``tokens_per_block``, ``frames``)."""
        self.products += sum(out.tokens_per_block)
        self.full_products += len(out.tokens_per_block) * out.frames

    def stage_start(self, stage):
        """See ``Strategy.stage_start``."""
        self.products, self.full_products = 0, 0

    def stage_stats(self, stage):
        """See ``Strategy.stage_stats``: the share of token-block products computed."""
        if not self.full_products:
            return {}
        return {"kept_share": round(self.products / self.full_products, 4)}


class WrappedBackbone(nn.Module):
    """A deployed backbone that runs its own forward on the wrapper ``ssl``'s model, keeping the
    wrapper's input normalisation and ``output_norm`` (what ``s3brain.backbone``'s helpers read).

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper.
    """

    onnx_exportable = False

    def __init__(self, ssl):
        super().__init__()
        self.ssl = ssl
        self.model = ssl.model
        self.normalize_wav = getattr(ssl, "normalize_wav", False)
        self.output_norm = getattr(ssl, "output_norm", False)


def merge_counts(lengths, merge_ratio):
    """Pairs merged at one step: ``floor(merge_ratio * tokens)`` of each utterance, at most all
    of its pairs (an utterance keeps at least one token).

    Arguments
    ---------
    lengths : torch.Tensor
        Tokens per utterance (integers).
    merge_ratio : float
        Share of the tokens merged away, in [0, 1).

    Returns
    -------
    torch.Tensor
        ``[batch]`` integers.

    Example
    -------
    >>> merge_counts(torch.tensor([499, 10, 1, 0]), 0.3).tolist()
    [149, 3, 0, 0]
    """
    counts = torch.floor(lengths.double() * float(merge_ratio)).long()
    return torch.minimum(counts, (lengths.long() - 1).clamp(min=0))


def nominal_kept_share(blocks, merge_after, merge_ratio):
    """Share of the token-block products the transformer computes under a schedule, rounding
    aside: the mean over blocks of the share of the tokens each block sees (a block after ``k``
    merge points sees ``(1 - merge_ratio) ** k`` of the frames). Token dropping's ``kept_share``
    is the same quantity with every block at the share of frames kept.

    Arguments
    ---------
    blocks : int
        Transformer blocks.
    merge_after : list of int
        Blocks (0-based) after which tokens are merged.
    merge_ratio : float
        Share of the tokens merged away at each of them.

    Returns
    -------
    float

    Example
    -------
    >>> nominal_kept_share(4, [0, 1, 2], 0.5)    # (1 + 1/2 + 1/4 + 1/8) / 4
    0.46875
    """
    kept = [(1.0 - merge_ratio) ** sum(1 for i in merge_after if i < block)
            for block in range(blocks)]
    return sum(kept) / blocks


def merge_ratio_for(kept_share, blocks, merge_after):
    """The ``merge_ratio`` at which ``nominal_kept_share`` is ``kept_share`` (bisection).

    Arguments
    ---------
    kept_share : float
        The target share of token-block products.
    blocks : int
        Transformer blocks.
    merge_after : list of int
        Blocks (0-based) after which tokens are merged.

    Returns
    -------
    float

    Example
    -------
    >>> round(merge_ratio_for(0.6381, 4, [0, 1, 2]), 4)
    0.295
    """
    low, high = 0.0, 1.0
    if nominal_kept_share(blocks, merge_after, high) > kept_share:
        raise ValueError(f"kept_share={kept_share} is out of reach merging after blocks "
                         f"{list(merge_after)} of {blocks}: merge after earlier blocks")
    for _ in range(60):
        middle = (low + high) / 2
        if nominal_kept_share(blocks, merge_after, middle) > kept_share:
            low = middle
        else:
            high = middle
    return (low + high) / 2
