"""Binary masks over the linear layers of a Hugging Face speech SSL backbone.

S3-Router fine-tunes *connections* instead of weights: each masked ``nn.Linear`` keeps its
pretrained weight frozen and gets a real-valued score per weight. The forward pass uses
``weight * topk(scores)`` (the top k = (1 - sparsity) * n scores of the layer are 1, the rest 0);
the backward pass goes straight through the binarisation to the scores. The masks are attached
with ``torch.nn.utils.parametrize``, so the model stays a transformers model and ``fold`` turns
it back into a plain one.

The same machinery serves the unstructured pruning baselines: ``FixedMask`` is a mask that is not
learned (magnitude pruning, OMP / IMP, and the mask bank), ``prune_in_place`` zeroes weights
without a mask (PARP).

Layers are found through one table per model family (``s3brain.backbone.families``), by the module
names of the transformers modelling files.

Example
-------
>>> import torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
...     conv_kernel=(10, 3), num_feat_extract_layers=2))
>>> names = add_masks(model, sparsity=0.25, init="ori", scope="ffn")
>>> names
['encoder.layers.0.feed_forward.intermediate_dense', 'encoder.layers.0.feed_forward.output_dense', \
'encoder.layers.1.feed_forward.intermediate_dense', 'encoder.layers.1.feed_forward.output_dense']
>>> {name: round(s, 3) for name, s in mask_sparsity(model).items()}[names[0]]
0.25
>>> [n for n, p in model.named_parameters() if p.requires_grad][:1]
['encoder.layers.0.feed_forward.intermediate_dense.parametrizations.weight.0.scores']
>>> _ = fold(model)
>>> type(model.encoder.layers[0].feed_forward.intermediate_dense.weight).__name__
'Parameter'
"""

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

# The family table lives in s3brain.backbone.families; imported here for the mechanisms below and
# for callers that import it from this module.
from s3brain.backbone.families import (  # noqa: F401
    FAMILIES,
    LayerNames,
    family,
    hf_model,
    is_stable_layer_norm,
    transformer_blocks,
)
from s3brain.utils.parametrize import remove_parametrization

SCOPES = ("ffn", "attention", "both")


INITS = ("ori", "ri", "wmi")


def target_linears(model, scope="ffn", blocks=None):
    """``{name: nn.Linear}`` of the layers in ``scope`` of the chosen ``blocks`` (all if None)."""
    model = hf_model(model)
    names = family(model)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    suffixes = {"ffn": names.ffn, "attention": names.attention,
                "both": names.attention + names.ffn}[scope]
    layers = model.get_submodule(names.blocks)
    chosen = range(len(layers)) if blocks is None else list(blocks)
    bad = [b for b in chosen if not 0 <= b < len(layers)]
    if bad:
        raise ValueError(f"blocks {bad} out of range: the model has {len(layers)} blocks")
    return {f"{names.blocks}.{b}.{suffix}": layers[b].get_submodule(suffix)
            for b in chosen for suffix in suffixes}


def kept_count(numel, sparsity):
    """Number of weights a layer keeps at ``sparsity`` (the share of weights removed)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return max(1, int(round((1.0 - sparsity) * numel)))


def topk_mask(scores, k):
    """Float mask with exactly ``k`` ones at the largest ``scores``.

    A selection (``kthvalue``) finds the threshold, which is several times cheaper than a sort
    or ``topk`` on a layer-sized tensor; ties at the threshold are broken by position.
    """
    flat = scores.reshape(-1)
    dropped = flat.numel() - k
    if dropped <= 0:
        return torch.ones_like(scores)
    threshold = torch.kthvalue(flat, dropped).values
    mask = flat > threshold
    missing = k - int(mask.sum())
    if missing > 0:  # equal scores at the threshold: keep the first ones
        ties = (flat == threshold).nonzero().squeeze(1)
        mask[ties[:missing]] = True
    return mask.to(scores.dtype).view_as(scores)


class _TopKStraightThrough(torch.autograd.Function):
    """Forward: binary top-k mask of the scores. Backward: the gradient passes through."""

    @staticmethod
    def forward(ctx, scores, k):
        """The binary mask: ones at the ``k`` largest ``scores``, zeros elsewhere.

        Arguments
        ---------
        ctx : torch.autograd.function.FunctionCtx
            Autograd's context (unused: the backward needs nothing saved).
        scores : torch.Tensor
            The scores of one layer, shaped like its weight.
        k : int
            How many weights to keep.

        Returns
        -------
        mask : torch.Tensor
            A float tensor of 0s and 1s shaped like ``scores``.
        """
        return topk_mask(scores, k)

    @staticmethod
    def backward(ctx, grad):
        """Straight-through estimator: the mask's gradient becomes the scores' gradient.

        Arguments
        ---------
        ctx : torch.autograd.function.FunctionCtx
            Autograd's context.
        grad : torch.Tensor
            The gradient with respect to the mask.

        Returns
        -------
        grad_scores : torch.Tensor
            ``grad`` unchanged, for the scores.
        grad_k : None
            ``k`` is an integer and has no gradient.
        """
        return grad, None


class LearnedMask(nn.Module):
    """Parametrization ``weight -> weight * topk(scores)`` with straight-through scores.

    Registered on an ``nn.Linear``'s weight with ``torch.nn.utils.parametrize``: the weight
    stays as it is (frozen by ``add_masks``) and only the scores learn.

    Arguments
    ---------
    scores : torch.Tensor
        Initial scores, shaped like the weight (see ``init_scores``).
    sparsity : float
        Share of the layer's weights masked out, in [0, 1).

    Example
    -------
    >>> mask = LearnedMask(torch.tensor([[0.1, 0.9], [0.5, 0.2]]), sparsity=0.5)
    >>> mask(torch.ones(2, 2))
    tensor([[0., 1.],
            [1., 0.]], grad_fn=<MulBackward0>)
    """

    def __init__(self, scores, sparsity):
        super().__init__()
        self.scores = nn.Parameter(scores)
        self.sparsity = float(sparsity)
        self.k = kept_count(scores.numel(), sparsity)

    def mask(self):
        """The current binary mask (no gradient)."""
        return topk_mask(self.scores.detach(), self.k)

    def forward(self, weight):
        """The masked weight, differentiable with respect to the scores.

        Arguments
        ---------
        weight : torch.Tensor
            The layer's original weight.

        Returns
        -------
        masked_weight : torch.Tensor
            ``weight`` with all but the ``k`` highest-scored entries set to zero.
        """
        return weight * _TopKStraightThrough.apply(self.scores, self.k)


class FixedMask(nn.Module):
    """Parametrization ``weight -> weight * mask`` with a stored, not learned, binary mask.

    Used by magnitude pruning and by the mask bank, which copies each task's mask into
    ``mask`` in place.

    Arguments
    ---------
    mask : torch.Tensor
        Shaped like the weight; stored as a boolean buffer (so it is saved in ``state_dict``).

    Example
    -------
    >>> FixedMask(torch.tensor([True, False]))(torch.tensor([2.0, 3.0]))
    tensor([2., 0.])
    """

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight):
        """The weight with the masked-out entries set to zero.

        Arguments
        ---------
        weight : torch.Tensor
            The layer's original weight.

        Returns
        -------
        masked_weight : torch.Tensor
            ``weight * mask``.
        """
        return weight * self.mask


def init_scores(weight, init, generator=None):
    """Initial scores: ``ri`` random, ``wmi`` weight magnitude, ``ori`` random values re-ordered so
    that their ranks follow the weight-magnitude ranks."""
    if init not in INITS:
        raise ValueError(f"mask init must be one of {INITS}, got {init!r}")
    magnitude = weight.detach().abs()
    if init == "wmi":
        return magnitude.clone()
    # Same range as nn.Linear's default weight init (kaiming uniform, a = sqrt(5)).
    bound = 1.0 / math.sqrt(weight.shape[1])
    # drawn on the CPU (the generator's device, reproducible anywhere), then moved to the weight's
    random = (torch.rand(weight.shape, generator=generator, dtype=weight.dtype) * 2 - 1) * bound
    random = random.to(weight.device)
    if init == "ri":
        return random
    scores = torch.empty_like(random).reshape(-1)
    scores[magnitude.reshape(-1).argsort()] = random.reshape(-1).sort().values
    return scores.view_as(weight)


def _sparsity_per_layer(targets, sparsity):
    """One sparsity per target layer from a float, or from a list with one value per block."""
    if isinstance(sparsity, (int, float)):
        return {name: float(sparsity) for name in targets}
    block_of = {name: name.split(".")[2] for name in targets}
    blocks = sorted(set(block_of.values()), key=int)
    if len(sparsity) != len(blocks):
        raise ValueError(f"a per-block sparsity list needs {len(blocks)} values (one per masked "
                         f"block), got {len(sparsity)}")
    per_block = dict(zip(blocks, sparsity))
    return {name: float(per_block[block_of[name]]) for name in targets}


def freeze(model):
    """Set ``requires_grad=False`` on every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)


def add_masks(model, sparsity=0.1, init="ori", scope="ffn", blocks=None, seed=0):
    """Attach learned masks (S3-Router) to the chosen layers and freeze every backbone weight.

    Parameters
    ----------
    model : transformers model or SpeechBrain wrapper
    sparsity : float or list of float
        Share of weights masked out per layer; a list gives one value per chosen block.
    init : "ori", "ri" or "wmi"
    scope : "ffn", "attention" or "both"
    blocks : list of int or None
        Transformer blocks to mask (all if None).
    seed : int
        Seed of the random scores (RI, ORI).

    Returns
    -------
    list of str: the masked layer names.
    """
    model = hf_model(model)
    targets = target_linears(model, scope, blocks)
    per_layer = _sparsity_per_layer(targets, sparsity)
    freeze(model)
    generator = torch.Generator().manual_seed(seed)
    for name, linear in targets.items():
        scores = init_scores(linear.weight, init, generator)
        parametrize.register_parametrization(linear, "weight", LearnedMask(scores, per_layer[name]))
    return list(targets)


def magnitude_mask(weight, sparsity):
    """Boolean mask keeping the largest-magnitude weights of one layer."""
    return topk_mask(weight.detach().abs(), kept_count(weight.numel(), sparsity)).bool()


def add_magnitude_masks(model, sparsity, scope="both", blocks=None):
    """Prune the chosen layers by weight magnitude with fixed masks (OMP / IMP); weights stay
    trainable and pruned weights get no gradient."""
    model = hf_model(model)
    targets = target_linears(model, scope, blocks)
    per_layer = _sparsity_per_layer(targets, sparsity)
    for name, linear in targets.items():
        mask = magnitude_mask(linear.weight, per_layer[name])
        parametrize.register_parametrization(linear, "weight", FixedMask(mask))
    return list(targets)


def update_magnitude_masks(model, sparsity):
    """Re-prune every ``FixedMask`` layer by the magnitude of its current masked weight (IMP)."""
    for linear in masked_linears(model).values():
        fixed = linear.parametrizations.weight[0]
        if isinstance(fixed, FixedMask):
            fixed.mask.copy_(magnitude_mask(linear.weight, sparsity))


def prune_in_place(model, sparsity, scope="both", blocks=None):
    """Zero the smallest-magnitude weights of the chosen layers, no mask kept (PARP's re-prune:
    zeroed weights go on being updated and may grow back)."""
    targets = target_linears(model, scope, blocks)
    per_layer = _sparsity_per_layer(targets, sparsity)
    with torch.no_grad():
        for name, linear in targets.items():
            linear.weight.mul_(magnitude_mask(linear.weight, per_layer[name]))
    return list(targets)


def masked_linears(model):
    """``{name: module}`` of the layers of ``model`` whose weight carries a mask."""
    model = hf_model(model)
    return {name: module for name, module in model.named_modules()
            if parametrize.is_parametrized(module, "weight")
            and isinstance(module.parametrizations.weight[0], (LearnedMask, FixedMask))}


def binary_masks(model):
    """``{name: bool tensor}``: the mask each masked layer applies now."""
    masks = {}
    for name, linear in masked_linears(model).items():
        param = linear.parametrizations.weight[0]
        masks[name] = param.mask().bool() if isinstance(param, LearnedMask) else param.mask.clone()
    return masks


def mask_sparsity(model):
    """``{name: share of zeros}`` of each masked layer's mask."""
    return {name: 1.0 - m.float().mean().item() for name, m in binary_masks(model).items()}


def weight_sparsity(model, scope="both", blocks=None):
    """Share of exact zeros in the effective weights of the chosen layers, all together."""
    weights = [linear.weight.detach() for linear in target_linears(model, scope, blocks).values()]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def fold(model):
    """Bake every mask into its layer's weight and remove the parametrizations, in place.

    The result is a plain transformers model (saves and loads with ``save_pretrained`` /
    ``from_pretrained``) that computes what the masked one did, with no mask overhead.
    """
    for linear in masked_linears(model).values():
        remove_parametrization(linear, "weight", leave_parametrized=True)
    return model
