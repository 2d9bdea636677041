"""Structured sparsity over FFN neurons and attention heads: masks, SAFARI, baselines, shrinking.

A unit is an FFN intermediate neuron (a row of ``intermediate_dense`` with its bias; its column
of ``output_dense`` goes when the model is shrunk) or an attention head (its rows of ``q_proj``/
``k_proj``/``v_proj`` with their biases; its ``out_proj`` columns go when shrunk).
``add_unit_masks`` attaches one keep-mask per block and unit type with
``torch.nn.utils.parametrize`` (the layer table of ``s3brain.strategies.s3router.masks``): a pruned
unit outputs exact zeros and its weights get no gradient, as after deployment.

Schedules (the same hooks as ``s3brain.strategies.pruning.schedules``, so the recipes drive them
unchanged): ``Safari`` (sparsify by L1 weight norm, fine-tune, every ``adjust_every`` steps prune
``ar*N`` more candidates by L1 norm and grow ``ar*N`` back by L1 gradient norm; constant sparsity;
mask frozen after ``fix_after`` steps), ``StructuredOneShot`` (OMP) and ``StructuredPARP``.

``shrink`` turns the masked model into a smaller dense one (fewer neurons, fewer heads) and
``save_shrunk`` writes it so that ``AutoModel.from_pretrained(path, trust_remote_code=True)``
loads it with transformers alone.

Example
-------
>>> import torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=4, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
>>> safari = Safari(sparsity=0.3)
>>> safari.setup(model)
>>> {k: round(v, 2) for k, v in unit_sparsity(model).items()}
{'ffn': 0.2, 'heads': 0.5}
>>> x = torch.randn(1, 1600)
>>> with torch.no_grad():
...     masked = model(x).last_hidden_state
...     shrunk = shrink(model)(x).last_hidden_state
>>> torch.allclose(masked, shrunk, atol=1e-5), model.config.layer_intermediate_sizes
(True, [51, 51])
"""

import inspect
import json
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from s3brain.backbone import shrunk_modeling
from s3brain.backbone.families import family, hf_model
from s3brain.backbone.shrunk_modeling import ShrunkWavLMAttention
from s3brain.strategies.pruning.schedules import PruningSchedule
from s3brain.utils.parametrize import remove_parametrization


class UnitMask(nn.Module):
    """Keep-mask over the units of one block (``kind`` "ffn" or "heads"), with the L1 gradient
    norm per unit accumulated by the parametrizations' hooks (SAFARI's grow criterion)."""

    def __init__(self, units, kind):
        super().__init__()
        self.kind = kind
        self.register_buffer("keep", torch.ones(units, dtype=torch.bool))
        self.register_buffer("grad_l1", torch.zeros(units), persistent=False)
        self.capture = False


class UnitMaskParam(nn.Module):
    """Parametrization: zero the units' slices of a weight or bias along ``axis``."""

    def __init__(self, units, axis, group):
        super().__init__()
        self.units = units
        self.axis = axis
        self.group = group

    def _expand(self, values, tensor):
        values = values.repeat_interleave(self.group)
        return values.view(-1, 1) if self.axis == 0 and tensor.dim() == 2 else values

    def _per_unit(self, tensor):
        reduce = tuple(d for d in range(tensor.dim()) if d != self.axis)
        per_slice = tensor.abs().sum(dim=reduce) if reduce else tensor.abs()
        return per_slice.view(-1, self.group).sum(1)

    def forward(self, tensor):
        """The weight or bias with the pruned units' slices set to zero.

        While SAFARI collects gradients (``units.capture``), a hook adds the L1 norm of each
        unit's gradient to ``units.grad_l1``.

        Arguments
        ---------
        tensor : torch.Tensor
            The original weight or bias.

        Returns
        -------
        masked : torch.Tensor
            ``tensor`` times the keep-mask, expanded over each unit's ``group`` slices.
        """
        out = tensor * self._expand(self.units.keep, tensor).to(tensor.dtype)
        if self.units.capture and out.requires_grad:
            out.register_hook(self._accumulate)
        return out

    def _accumulate(self, grad):
        self.units.grad_l1.add_(self._per_unit(grad.detach()))


def _block_layers(model):
    model = hf_model(model)
    names = family(model)
    return model, model.get_submodule(names.blocks), names


def _slices(block, names):
    """``{kind: [(module, tensor name, axis)]}``: the incoming weights and biases of each unit of
    one block. Zeroing them silences the unit (GELU(0) = 0; a head with zero values outputs 0),
    its outgoing weights then get no gradient, and the gradient on the zeroed slices stays
    informative, which prune-and-grow needs (masking both sides would make it zero)."""
    (q, k, v, _), (inter, _) = names.attention, names.ffn
    sub = block.get_submodule
    return {"ffn": [(sub(inter), "weight", 0), (sub(inter), "bias", 0)],
            "heads": [(sub(m), t, 0) for m in (q, k, v) for t in ("weight", "bias")]}


def add_unit_masks(model):
    """Attach FFN-neuron and head keep-masks (all kept) to every block; returns
    ``{"<block>.ffn": UnitMask, "<block>.heads": UnitMask}``."""
    model, blocks, names = _block_layers(model)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    masks = {}
    for b, block in enumerate(blocks):
        for kind, slices in _slices(block, names).items():
            first = getattr(slices[0][0], slices[0][1])
            group = head_dim if kind == "heads" else 1
            units = masks[f"{b}.{kind}"] = UnitMask(first.shape[0] // group, kind).to(first.device)
            for module, tensor, axis in slices:
                parametrize.register_parametrization(module, tensor,
                                                     UnitMaskParam(units, axis, group))
    return masks


def unit_masks(model):
    """The ``UnitMask`` of every block of a masked model, as ``add_unit_masks`` returns them."""
    model, blocks, names = _block_layers(model)
    found = {}
    for b, block in enumerate(blocks):
        for kind, slices in _slices(block, names).items():
            module, tensor, _ = slices[0]
            if parametrize.is_parametrized(module, tensor):
                found[f"{b}.{kind}"] = getattr(module.parametrizations, tensor)[0].units
    return found


def unit_sparsity(model):
    """Share of pruned units per kind over the whole model."""
    totals = {}
    for units in unit_masks(model).values():
        pruned, count = totals.get(units.kind, (0, 0))
        totals[units.kind] = (pruned + int((~units.keep).sum()), count + units.keep.numel())
    return {kind: pruned / count for kind, (pruned, count) in totals.items()}


def unit_l1(model):
    """``{name: L1 norm of each unit's weights}`` (all its slices, current values)."""
    model, blocks, names = _block_layers(model)
    masks = unit_masks(model)
    norms = {}
    for b, block in enumerate(blocks):
        for kind, slices in _slices(block, names).items():
            total = 0
            for module, tensor, axis in slices:
                param = getattr(module.parametrizations, tensor)
                total = total + param[0]._per_unit(param.original.detach())
            norms[f"{b}.{kind}"] = total
    return {k: v for k, v in norms.items() if k in masks}


def split_sparsity(sparsity, gap=0.2):
    """``(sp_ffn, sp_heads)`` with mean ``sparsity`` and ``sp_heads - sp_ffn = gap`` (clipped)."""
    sp_heads = min(max(sparsity + gap / 2, 0.0), 0.95)
    return max(min(2 * sparsity - sp_heads, 0.95), 0.0), sp_heads


def prune_count(units, sparsity):
    """How many of ``units`` units to prune at ``sparsity`` (rounded to the nearest).

    Arguments
    ---------
    units : int
        Units of one type in one block.
    sparsity : float
        Share to prune.

    Returns
    -------
    count : int

    Example
    -------
    >>> prune_count(12, 0.3)
    4
    """
    return int(round(sparsity * units))


def sparsify_by_l1(model, sp_ffn, sp_heads):
    """Keep-masks pruning the units of smallest L1 weight norm, per block."""
    norms = unit_l1(model)
    for name, units in unit_masks(model).items():
        count = prune_count(units.keep.numel(), sp_ffn if units.kind == "ffn" else sp_heads)
        keep = torch.ones_like(units.keep)
        keep[norms[name].argsort()[:count]] = False
        units.keep.copy_(keep)


class StructuredOneShot(PruningSchedule):
    """Structured OMP: prune units by L1 weight norm once, fine-tune the rest."""

    def __init__(self, sparsity, gap=0.2):
        super().__init__(sparsity)
        self.sp_ffn, self.sp_heads = split_sparsity(sparsity, gap)

    def setup(self, model):
        """Attach the unit masks and prune the units of smallest L1 weight norm in every block.

        Arguments
        ---------
    model : transformers model or SpeechBrain wrapper
            The backbone, changed in place.
        """
        add_unit_masks(model)
        sparsify_by_l1(model, self.sp_ffn, self.sp_heads)


class Safari(StructuredOneShot):
    """SAFARI: sparsify, fine-tune with pruned units exactly zero, and every ``adjust_every``
    steps prune-and-grow ``adjust_ratio * N`` units per block (``adjust_ratio`` defaults to the
    sparsity); the mask is frozen after ``fix_after`` steps."""

    def __init__(self, sparsity, gap=0.2, adjust_every=50, adjust_ratio=None, fix_after=10000):
        super().__init__(sparsity, gap)
        self.adjust_every = int(adjust_every)
        self.adjust_ratio = sparsity if adjust_ratio is None else float(adjust_ratio)
        self.fix_after = int(fix_after)
        self.moved = 0  # units whose state changed, over all adjustments

    def setup(self, model):
        """Prune as ``StructuredOneShot`` does, then start collecting the units' gradient norms
        for the first prune-and-grow step.

        Arguments
        ---------
    model : transformers model or SpeechBrain wrapper
            The backbone, changed in place.
        """
        super().setup(model)
        self._capture(model, True)

    @staticmethod
    def _capture(model, on):
        for units in unit_masks(model).values():
            units.capture = on
            units.grad_l1.zero_()

    def on_step(self, model, step):
        """Prune-and-grow every ``adjust_every`` steps; after ``fix_after`` steps stop collecting
        gradient norms (the mask stays as it is).

        Arguments
        ---------
    model : transformers model or SpeechBrain wrapper
            The backbone with its unit masks.
        step : int
            Number of optimizer steps done (1-based).
        """
        if step > self.fix_after:
            self._capture(model, False)
        elif step % self.adjust_every == 0:
            self.adjust(model)

    def adjust(self, model):
        """One prune-and-grow step on every block; sparsity stays the same."""
        norms = unit_l1(model)
        for name, units in unit_masks(model).items():
            n = units.keep.numel()
            count = min(prune_count(n, self.adjust_ratio), int(units.keep.sum()))
            if count == 0:
                continue
            kept = units.keep.nonzero().squeeze(1)
            candidates = kept[norms[name][kept].argsort()[:count]]
            pool = torch.cat([(~units.keep).nonzero().squeeze(1), candidates])
            grow = pool[units.grad_l1[pool].argsort(descending=True)[:count]]
            new = units.keep.clone()
            new[candidates] = False
            new[grow] = True
            self.moved += int((new != units.keep).sum())
            units.keep.copy_(new)
            units.grad_l1.zero_()


class StructuredPARP(PruningSchedule):
    """Structured PARP: units are zeroed in the weights (no mask), every weight keeps training,
    and units are re-pruned by L1 norm every ``interval_steps`` and before each evaluation."""

    def __init__(self, sparsity, gap=0.2, interval_steps=50):
        super().__init__(sparsity)
        self.sp_ffn, self.sp_heads = split_sparsity(sparsity, gap)
        self.interval_steps = int(interval_steps)

    def _prune(self, model):
        add_unit_masks(model)
        sparsify_by_l1(model, self.sp_ffn, self.sp_heads)
        fold_units(model)

    def setup(self, model):
        """Zero the units of smallest L1 weight norm in every block, in the weights themselves.

        Arguments
        ---------
    model : transformers model or SpeechBrain wrapper
            The backbone, changed in place.
        """
        self._prune(model)

    def on_step(self, model, step):
        """Re-prune by L1 norm every ``interval_steps`` steps (pruned units may have regrown).

        Arguments
        ---------
    model : transformers model or SpeechBrain wrapper
            The backbone, changed in place.
        step : int
            Number of optimizer steps done (1-based).
        """
        if step % self.interval_steps == 0:
            self._prune(model)

    def before_eval(self, model):
        """Re-prune, so that every evaluation sees the model at its target sparsity.

        Arguments
        ---------
    model : transformers model or SpeechBrain wrapper
            The backbone, changed in place.
        """
        self._prune(model)


def fold_units(model):
    """Bake the unit masks into the weights and remove them (pruned units become zeros)."""
    model_, blocks, names = _block_layers(model)
    for block in blocks:
        for slices in _slices(block, names).values():
            for module, tensor, _ in slices:
                if parametrize.is_parametrized(module, tensor):
                    remove_parametrization(module, tensor, leave_parametrized=True)
    return model


def silent_units(model):
    """Keep-masks inferred from the weights: a unit whose incoming weights and biases are all
    zero is pruned (how ``StructuredPARP`` leaves a model)."""
    model, blocks, names = _block_layers(model)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    found = {}
    for b, block in enumerate(blocks):
        for kind, slices in _slices(block, names).items():
            group = head_dim if kind == "heads" else 1
            alive = 0
            for module, tensor, axis in slices:
                values = getattr(module, tensor).detach().abs()
                per_row = values.sum(1) if values.dim() == 2 else values
                alive = alive + per_row.view(-1, group).sum(1)
            units = UnitMask(alive.numel(), kind).to(alive.device)
            units.keep.copy_(alive > 0)
            found[f"{b}.{kind}"] = units
    return found


def _select(linear, rows=None, cols=None):
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if rows is not None:
        weight, bias = weight[rows], (bias[rows] if bias is not None else None)
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def shrink(model):
    """Physically remove pruned units: each block's FFN and attention projections get only the
    kept neurons and heads (from the unit masks, or, without masks, the units whose incoming
    weights are all zero). In place; returns the transformers model, whose config then lists
    the per-block sizes (``layer_intermediate_sizes``, ``layer_attention_heads``, and for WavLM
    the kept heads' original indices, ``layer_attention_head_ids``).

    WavLM: each block gets ``shrunk_modeling.ShrunkWavLMAttention`` with its kept heads' gate
    constants and columns of the relative position bias table (the first block's, which every
    block uses in the stock model)."""

    model, blocks, names = _block_layers(model)
    if model.config.model_type not in shrunk_modeling.CLASSES:
        raise ValueError(f"shrinking {model.config.model_type} is not supported: known "
                         f"{sorted(shrunk_modeling.CLASSES)}")
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    full_heads = model.config.num_attention_heads
    masks = unit_masks(model) or silent_units(model)
    fold_units(model)
    attention_name = names.attention[0].rsplit(".", 1)[0]
    bias_table = None
    if names.position_bias:  # WavLM: the bias table of the first block, shared by all
        bias_table = blocks[0].get_submodule(attention_name).rel_attn_embed.weight.detach()
    widths, heads, head_ids = [], [], []
    for b, block in enumerate(blocks):
        ffn_keep = masks[f"{b}.ffn"].keep if f"{b}.ffn" in masks else None
        head_keep = masks[f"{b}.heads"].keep if f"{b}.heads" in masks else None
        attention = block.get_submodule(attention_name)
        ffn = block.get_submodule(names.ffn[0].rsplit(".", 1)[0])
        if ffn_keep is not None:
            rows = ffn_keep.nonzero().squeeze(1)
            ffn.intermediate_dense = _select(ffn.intermediate_dense, rows=rows)
            ffn.output_dense = _select(ffn.output_dense, cols=rows)
        if head_keep is None:
            head_keep = torch.ones(full_heads, dtype=torch.bool, device=bias_table.device) \
                if bias_table is not None else None
        if head_keep is not None:
            rows = head_keep.repeat_interleave(head_dim).nonzero().squeeze(1)
            for name in ("q_proj", "k_proj", "v_proj"):
                setattr(attention, name, _select(getattr(attention, name), rows=rows))
            attention.out_proj = _select(attention.out_proj, cols=rows)
            attention.num_heads = int(head_keep.sum())
        if bias_table is not None:
            kept = head_keep.nonzero().squeeze(1)
            attention = _shrunk_wavlm_attention(attention, full_heads, kept, bias_table)
            block.set_submodule(attention_name, attention)
            head_ids.append(kept.tolist())
        widths.append(ffn.intermediate_dense.out_features)
        heads.append(attention.q_proj.out_features // head_dim)
    model.config.layer_intermediate_sizes = widths
    model.config.layer_attention_heads = heads
    if bias_table is not None:
        model.config.layer_attention_head_ids = head_ids
    return model


def _shrunk_wavlm_attention(attention, full_heads, kept, bias_table):
    """A ``ShrunkWavLMAttention`` computing what the WavLM ``attention`` (projections already
    sliced to the ``kept`` heads) computes for those heads."""

    weight = attention.q_proj.weight
    new = ShrunkWavLMAttention(attention.embed_dim, full_heads, kept.tolist(), attention.dropout,
                               attention.num_buckets, attention.max_distance)
    new.to(device=weight.device, dtype=weight.dtype).train(attention.training)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj", "gru_rel_pos_linear"):
        setattr(new, name, getattr(attention, name))
    with torch.no_grad():
        new.gru_rel_pos_const.copy_(attention.gru_rel_pos_const[:, kept])
        new.rel_attn_embed.weight.copy_(bias_table[:, kept])
    return new


def save_shrunk(model, path):
    """Save a shrunk model with the modelling file that lets transformers load it
    (``AutoModel.from_pretrained(path, trust_remote_code=True)``)."""

    model = hf_model(model)
    config_name, model_name = shrunk_modeling.CLASSES[model.config.model_type]
    path = Path(path)
    model.config.auto_map = {"AutoConfig": f"modeling_shrunk.{config_name}",
                             "AutoModel": f"modeling_shrunk.{model_name}"}
    model.save_pretrained(path)
    shutil.copy(inspect.getsourcefile(shrunk_modeling), path / "modeling_shrunk.py")
    config = json.loads((path / "config.json").read_text())
    if "layer_intermediate_sizes" not in config:
        raise RuntimeError("the model is not shrunk: call shrink() first")
    return path
