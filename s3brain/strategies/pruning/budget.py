"""Structured pruning to a FLOPs budget of the whole backbone: CNN feature-encoder channels,
attention heads and FFN units removed together until the backbone's FLOPs for ``seconds`` of
audio are at most ``target_flops_ratio`` of the dense backbone's, then physically removed.

A unit is a CNN channel (an output channel of one conv layer: its row of the convolution, its
entries in the layer's norm, its input column of the next conv layer, or for the last layer of
the feature projection and its norm), an attention head (its columns of ``out_proj``; its rows
of the query, key and value projections go when shrunk) or an FFN unit (its column of
``output_dense``; its row of ``intermediate_dense`` goes when shrunk). Each group of units (a
conv layer's channels, a block's heads, a block's FFN units) has a ``UnitGate``: a keep bit and
an importance per unit.

- **The masked model computes what the shrunk one does.** A CNN gate multiplies its conv
  layer's output; the layer norms over the channels (each conv layer's in the large layout and
  in data2vec-audio, the feature projection's) normalise over the kept channels only, and the
  base layout's first-layer group norm is per channel (``GroupNorm(C, C)``), so removing a
  channel changes no other one. A head's or FFN unit's gate is a parametrization of its
  outgoing columns, so the masked block adds exactly what the shrunk one does.
- **Importance** is the first-order Taylor estimate of the training loss's change when the unit
  is removed (Molchanov et al., 2019): ``|dL/dg|`` for the unit's gate ``g = 1`` (its output
  scaled by ``g``), per optimizer step, summed over the steps since the last pruning event. The
  loss is the run's (the task's, plus the term of a ``Distillation`` strategy, whose teacher is
  the fine-tuned model), so it is comparable across unit types: a change of the loss.
- **Cost** is exact: the backbone's FLOPs as ``torch.utils.flop_counter`` counts them
  (``s3brain.utils.efficiency.count_flops``) are, in the kept counts, a constant (positional
  convolution...) plus ``2 L_i k_i n_{i-1} n_i`` per conv layer, ``2 T n_last H`` for the
  feature projection, and a constant per head and per FFN unit (``BackboneFlops``); the
  constant comes from one count of the dense model.
- **Selection** (``prune_to_budget``): the kept unit with the least importance per FLOP it saves
  goes, one at a time (a channel's saving depends on its neighbours' counts), until the budget
  is met; then the pruned units of most importance per FLOP that fit the budget come back.
- **Schedule** (``BudgetPruning``): a pruning event every ``prune_every`` optimizer steps until
  ``prune_until``, the budget going from the dense model's to the target along Zhu and Gupta's
  cubic; the run's checkpoints before ``prune_until`` rank after the later ones.
- **Shrinking** (``shrink_budget``): the kept CNN channels sliced out of the convolutions and
  norms (``config.conv_dim`` becomes a per-layer list, which the stock models read), heads and
  FFN units removed by ``structured.shrink``; ``structured.save_shrunk`` then writes a folder
  that ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` loads.

Example
-------
>>> import torch
>>> from s3brain.backbone.tiny_models import tiny_model
>>> model = tiny_model("wav2vec2", "base").eval()
>>> pruning = BudgetPruning(target_flops_ratio=0.4, prune_until=1)
>>> pruning.setup(model, {})
>>> pruning.on_step(model, 1)            # the one pruning event
>>> x = torch.randn(1, 4000)
>>> with torch.no_grad():
...     masked = model(x).last_hidden_state
...     shrunk = shrink_budget(model)
...     same = torch.allclose(masked, shrunk(x).last_hidden_state, atol=1e-5)
>>> same, pruning.flops.measure(shrunk) <= 0.4 * pruning.flops.dense
(True, True)
"""

import copy
import logging
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from s3brain.backbone.audio import backbone_rate
from s3brain.backbone.families import family, hf_model, transformer_blocks
from s3brain.strategies.base import Strategy
from s3brain.strategies.pruning.structured import _select, add_unit_masks, shrink
from s3brain.strategies.token_dropping import TokenDropping
from s3brain.utils.efficiency import count_flops
from s3brain.utils.parametrize import remove_parametrization

logger = logging.getLogger(__name__)

#: the attribute of a conv layer that holds its channels' gate
GATE = "budget_gate"


class UnitGate(nn.Module):
    """Keep bits and Taylor importances of the units of one CNN layer or one block's heads or
    FFN units (``kind``: ``conv``, ``heads``, ``ffn``; ``group``: a unit's rows, the head size).

    Arguments
    ---------
    units : int
        Number of units.
    kind : str
        ``conv``, ``heads`` or ``ffn``.
    group : int
        Rows of a tensor per unit.

    Example
    -------
    >>> gate = UnitGate(3, "conv")
    >>> gate.keep[1] = False
    >>> gate.conv_output(None, None, torch.ones(1, 3, 2)).sum().item()
    4.0
    """

    def __init__(self, units, kind, group=1):
        super().__init__()
        self.kind, self.group = kind, int(group)
        self.register_buffer("keep", torch.ones(units, dtype=torch.bool))
        self.register_buffer("score", torch.zeros(units))  # summed |dL/dg| since the last event
        self.register_buffer("step_grad", torch.zeros(units), persistent=False)
        self.capture = False

    def gate(self, dtype):
        """The keep bits as a ``dtype`` tensor; while ``capture`` is on (and gradients are), a
        leaf whose gradient, ``dL/dg``, is added to ``step_grad``.

        Arguments
        ---------
        dtype : torch.dtype
            The dtype of the tensor it multiplies.

        Returns
        -------
        torch.Tensor
            ``[units]``.
        """
        gate = self.keep.to(dtype)
        if self.capture and torch.is_grad_enabled():
            gate.requires_grad_(True)
            gate.register_hook(self._accumulate)
        return gate

    def _accumulate(self, grad):
        self.step_grad.add_(grad.detach().to(self.step_grad.dtype))

    def end_step(self):
        """Add the step's ``|dL/dg|`` to the importance (one optimizer step ended)."""
        self.score.add_(self.step_grad.abs())
        self.step_grad.zero_()

    def conv_output(self, module, args, output):
        """Forward hook of a conv layer: its pruned channels' outputs are zero.

        Arguments
        ---------
        module : torch.nn.Module
            The conv layer.
        args : tuple
            Its inputs.
        output : torch.Tensor
            ``[batch, channels, frames]``.

        Returns
        -------
        torch.Tensor
            ``output`` times the gate.
        """
        return output * self.gate(output.dtype)[None, :, None]

    def channel_norm(self, module, args, output):
        """Forward hook of a layer norm over the channels: normalised over the kept channels
        only (as the shrunk model's norm is), zero on the others.

        Arguments
        ---------
        module : torch.nn.LayerNorm
            The norm.
        args : tuple
            Its input ``[..., channels]``.
        output : torch.Tensor
            Its output over every channel.

        Returns
        -------
        torch.Tensor
        """
        if bool(self.keep.all()):
            return output
        x = args[0]
        kept = self.keep.to(x.dtype)
        count = kept.sum()
        centred = (x - (x * kept).sum(-1, keepdim=True) / count) * kept
        normed = centred * torch.rsqrt((centred ** 2).sum(-1, keepdim=True) / count + module.eps)
        if module.weight is not None:
            normed = normed * module.weight
        if module.bias is not None:
            normed = normed + module.bias
        return normed * kept


class GateParam(nn.Module):
    """Parametrization of the weight that reads the units' outputs (``out_proj``,
    ``output_dense``): each unit's columns times its gate.

    Arguments
    ---------
    units : UnitGate
        The gate.

    Example
    -------
    >>> gate = UnitGate(2, "heads", group=2)
    >>> gate.keep[0] = False
    >>> GateParam(gate)(torch.ones(3, 4)).sum(0).tolist()
    [0.0, 0.0, 3.0, 3.0]
    """

    def __init__(self, units):
        super().__init__()
        self.units = units

    def forward(self, tensor):
        """``tensor`` with its pruned units' columns zero.

        Arguments
        ---------
        tensor : torch.Tensor
            The original weight ``[outputs, units * group]``.

        Returns
        -------
        torch.Tensor
        """
        return tensor * self.units.gate(tensor.dtype).repeat_interleave(self.units.group)


def _conv_layers(model):
    return model.get_submodule(family(model).conv_layers)


def _optional(module, name):
    """The submodule ``name`` of ``module``, or None."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        return None


def _gated_linears(block, names):
    """``[(kind, linear)]``: the layers that read a block's FFN units and heads."""
    return [("ffn", block.get_submodule(names.ffn[1])),  # output_dense
            ("heads", block.get_submodule(names.attention[3]))]  # out_proj


def add_budget_gates(model):
    """Gate every CNN channel, attention head and FFN unit of ``model`` (all kept).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``s3brain.backbone.families.FAMILIES``, or a
        SpeechBrain wrapper of one; changed in place.

    Returns
    -------
    dict
        ``{"conv.<i>": UnitGate, "<block>.ffn": ..., "<block>.heads": ...}``.
    """
    hf = hf_model(model)
    names = family(hf)
    gates = {}
    for i, layer in enumerate(_conv_layers(hf)):
        conv = layer.get_submodule(names.conv[0])
        gate = UnitGate(conv.out_channels, "conv").to(conv.weight.device)
        layer.add_module(GATE, gate)
        layer.register_forward_hook(gate.conv_output)
        norm = _optional(layer, names.conv[1])
        if isinstance(norm, nn.LayerNorm):
            norm.register_forward_hook(gate.channel_norm)
        elif isinstance(norm, nn.GroupNorm) and norm.num_groups != norm.num_channels:
            raise ValueError(f"conv layer {i} normalises groups of channels: its channels "
                             f"cannot be removed one by one")
        gates[f"conv.{i}"] = gate
    norm = _optional(hf, names.projection[0])
    if isinstance(norm, nn.LayerNorm):
        norm.register_forward_hook(gates[f"conv.{len(_conv_layers(hf)) - 1}"].channel_norm)
    head_dim = hf.config.hidden_size // hf.config.num_attention_heads
    for b, block in enumerate(transformer_blocks(hf)):
        for kind, linear in _gated_linears(block, names):
            group = head_dim if kind == "heads" else 1
            gate = UnitGate(linear.in_features // group, kind, group).to(linear.weight.device)
            parametrize.register_parametrization(linear, "weight", GateParam(gate))
            gates[f"{b}.{kind}"] = gate
    return gates


def budget_gates(model):
    """The ``UnitGate`` of every gated unit type of ``model``, as ``add_budget_gates`` returns
    them (empty for a model without gates).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper of one.

    Returns
    -------
    dict
    """
    hf = hf_model(model)
    names = family(hf)
    found = {f"conv.{i}": getattr(layer, GATE)
             for i, layer in enumerate(_conv_layers(hf)) if hasattr(layer, GATE)}
    for b, block in enumerate(transformer_blocks(hf)):
        for kind, linear in _gated_linears(block, names):
            if parametrize.is_parametrized(linear, "weight"):
                for param in linear.parametrizations.weight:
                    if isinstance(param, GateParam):
                        found[f"{b}.{kind}"] = param.units
    return found


class BackboneFlops:
    """The FLOPs of a backbone for ``seconds`` of audio, exactly as ``count_flops`` counts them,
    as a function of its kept units per group (``{"conv.<i>": channels, "<block>.heads":
    heads, "<block>.ffn": units}``): a constant measured once on the dense model plus the
    terms that the kept counts change.

    Arguments
    ---------
    model : torch.nn.Module
        The dense backbone (a transformers model or a SpeechBrain wrapper of one).
    seconds : float
        The audio length the FLOPs are counted on.
    rate : int
        The backbone's sample rate.

    Example
    -------
    >>> from s3brain.backbone.tiny_models import tiny_model
    >>> flops = BackboneFlops(tiny_model("hubert", "base"), seconds=1)
    >>> flops.count(flops.dense_counts) == flops.dense
    True
    """

    def __init__(self, model, seconds=10.0, rate=16000):
        hf = hf_model(model)
        config = hf.config
        self.samples = round(seconds * rate)
        self.kernels, self.lengths = list(config.conv_kernel), []
        length = self.samples
        for kernel, stride in zip(config.conv_kernel, config.conv_stride):
            length = (length - kernel) // stride + 1
            self.lengths.append(length)
        frames, hidden = self.lengths[-1], config.hidden_size
        head_dim = hidden // config.num_attention_heads
        self.hidden = hidden
        # q, k, v and out projections, both attention products, WavLM's gate (Linear(d, 8))
        self.per_head = (8 * frames * hidden * head_dim + 4 * frames * frames * head_dim
                         + (16 * frames * head_dim if family(hf).position_bias else 0))
        self.per_ffn = 4 * frames * hidden
        self.dense_counts = {f"conv.{i}": int(c) for i, c in enumerate(config.conv_dim)}
        for b in range(config.num_hidden_layers):
            self.dense_counts[f"{b}.ffn"] = int(config.intermediate_size)
            self.dense_counts[f"{b}.heads"] = int(config.num_attention_heads)
        self.dense = self.measure(hf)
        self.constant = self.dense - self._variable(self.dense_counts)

    def measure(self, model):
        """FLOPs of one forward of ``model`` (eval mode) on ``seconds`` of audio, counted.

        Arguments
        ---------
        model : torch.nn.Module
            A transformers model or a SpeechBrain wrapper of one.

        Returns
        -------
        int
        """
        hf = hf_model(model)
        parameter = next(hf.parameters())
        wav = torch.randn(1, self.samples, generator=torch.Generator().manual_seed(0)) * 0.1
        training = hf.training
        hf.eval()
        try:
            return count_flops(lambda x: hf(x), wav.to(parameter.device, parameter.dtype))
        finally:
            hf.train(training)

    def _conv_index(self, name):
        return int(name.split(".")[1])

    def _variable(self, counts):
        total, previous = 0, 1
        for i, (kernel, length) in enumerate(zip(self.kernels, self.lengths)):
            channels = counts[f"conv.{i}"]
            total += 2 * length * kernel * previous * channels
            previous = channels
        total += 2 * self.lengths[-1] * previous * self.hidden  # the feature projection
        for name, count in counts.items():
            if name.endswith(".heads"):
                total += self.per_head * count
            elif name.endswith(".ffn"):
                total += self.per_ffn * count
        return total

    def count(self, counts):
        """FLOPs of the backbone with ``counts`` units kept.

        Arguments
        ---------
        counts : dict
            Kept units per group.

        Returns
        -------
        int
        """
        return self.constant + self._variable(counts)

    def saving(self, name, counts):
        """FLOPs one unit of group ``name`` costs, with ``counts`` kept (every term is linear
        in each count, so this is what removing one saves and adding one back costs).

        Arguments
        ---------
        name : str
            The group.
        counts : dict
            Kept units per group.

        Returns
        -------
        int
        """
        if name.endswith(".heads"):
            return self.per_head
        if name.endswith(".ffn"):
            return self.per_ffn
        i = self._conv_index(name)
        previous = counts[f"conv.{i - 1}"] if i > 0 else 1
        own = 2 * self.lengths[i] * self.kernels[i] * previous
        if i + 1 < len(self.lengths):
            return own + 2 * self.lengths[i + 1] * self.kernels[i + 1] * counts[f"conv.{i + 1}"]
        return own + 2 * self.lengths[i] * self.hidden

    def minimum_counts(self, keep_last_conv=False):
        """The fewest units pruning may leave: one per conv layer (all of the last one with
        ``keep_last_conv``), one head and one FFN unit per block.

        Arguments
        ---------
        keep_last_conv : bool
            Keep every channel of the last conv layer (a SALAD detector reads them).

        Returns
        -------
        dict
        """
        minimum = {name: 1 for name in self.dense_counts}
        if keep_last_conv:
            last = f"conv.{len(self.lengths) - 1}"
            minimum[last] = self.dense_counts[last]
        return minimum


def kept_counts(gates):
    """``{group: kept units}`` of ``gates``.

    Arguments
    ---------
    gates : dict
        ``{group: UnitGate}``.

    Returns
    -------
    dict
    """
    return {name: int(gate.keep.sum()) for name, gate in gates.items()}


def prune_to_budget(gates, flops, budget, minimum):
    """Remove the kept units of least importance per FLOP saved until ``flops.count`` of the
    kept counts is at most ``budget``, then put back the pruned units of most importance per
    FLOP that still fit.

    Arguments
    ---------
    gates : dict
        ``{group: UnitGate}`` (their ``score`` is the importance); changed in place.
    flops : BackboneFlops
        The cost model.
    budget : float
        The FLOPs allowed.
    minimum : dict
        The fewest units of each group.

    Returns
    -------
    int
        Units removed, less those put back.
    """
    counts = kept_counts(gates)
    current = flops.count(counts)
    queues, scores, position = {}, {}, {}
    for name, gate in gates.items():
        kept = gate.keep.nonzero().squeeze(1)
        queues[name] = kept[gate.score[kept].argsort(stable=True)].tolist()
        scores[name], position[name] = gate.score.tolist(), 0
    removed = []
    while current > budget:
        best, best_value = None, None
        for name, queue in queues.items():
            if counts[name] <= minimum[name]:
                continue
            value = scores[name][queue[position[name]]] / flops.saving(name, counts)
            if best is None or value < best_value:
                best, best_value = name, value
        if best is None:
            raise ValueError(f"a budget of {budget:.4g} FLOPs is below the smallest model "
                             f"this pruning leaves ({flops.count(counts):.4g})")
        current -= flops.saving(best, counts)
        counts[best] -= 1
        removed.append((best, queues[best][position[best]]))
        position[best] += 1
    for name, unit in removed:
        gates[name].keep[unit] = False
    # the budget's slack, less than the last unit removed: filled back with the pruned units
    # of most importance per FLOP that fit (a pruned unit's importance: its gate's gradient
    # at 0, what adding it back would change)
    pruned = [(name, unit) for name, gate in gates.items()
              for unit in (~gate.keep).nonzero().squeeze(1).tolist()]
    pruned.sort(key=lambda u: scores[u[0]][u[1]] / flops.saving(u[0], counts), reverse=True)
    back = 0
    for name, unit in pruned:
        cost = flops.saving(name, counts)
        if current + cost <= budget:
            current += cost
            counts[name] += 1
            gates[name].keep[unit] = True
            back += 1
    return len(removed) - back


def _sliced_conv(conv, rows, cols):
    new = nn.Conv1d(len(cols) if cols is not None else conv.in_channels, len(rows),
                    conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, bias=conv.bias is not None,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    weight = conv.weight.detach()[rows]
    with torch.no_grad():
        new.weight.copy_(weight[:, cols] if cols is not None else weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach()[rows])
    return new


def _sliced_norm(norm, rows):
    if isinstance(norm, nn.GroupNorm):
        new = nn.GroupNorm(len(rows), len(rows), eps=norm.eps, affine=norm.affine)
    else:
        new = nn.LayerNorm(len(rows), eps=norm.eps, elementwise_affine=norm.elementwise_affine,
                           bias=norm.bias is not None)
    new.to(device=norm.weight.device if norm.weight is not None else None)
    with torch.no_grad():
        for name in ("weight", "bias"):
            if getattr(norm, name) is not None:
                getattr(new, name).copy_(getattr(norm, name).detach()[rows])
    return new


def _drop_gate_hooks(module):
    for key, hook in list(module._forward_hooks.items()):
        if isinstance(getattr(hook, "__self__", None), UnitGate):
            del module._forward_hooks[key]


def shrink_budget(model):
    """Physically remove the pruned CNN channels, heads and FFN units of a gated model, in
    place, and drop the gates: the result is a plain model of its family with
    ``config.conv_dim`` per layer and the per-block sizes of ``structured.shrink``
    (``structured.save_shrunk`` writes it for transformers alone).

    Arguments
    ---------
    model : torch.nn.Module
        A model with budget gates (``add_budget_gates``), or a SpeechBrain wrapper of one.

    Returns
    -------
    transformers.PreTrainedModel
        The shrunk model (the wrapper now holds it).
    """
    hf = hf_model(model)
    names = family(hf)
    gates = budget_gates(hf)
    if not gates:
        raise ValueError("the model has no budget gates: nothing to shrink")
    keeps = {name: gate.keep.clone() for name, gate in gates.items()}
    for block in transformer_blocks(hf):
        for _, linear in _gated_linears(block, names):
            if parametrize.is_parametrized(linear, "weight"):
                remove_parametrization(linear, "weight", leave_parametrized=True)
    layers = _conv_layers(hf)
    previous, sizes = None, []
    for i, layer in enumerate(layers):
        rows = keeps[f"conv.{i}"].nonzero().squeeze(1)
        _drop_gate_hooks(layer)
        delattr(layer, GATE)
        layer.set_submodule(names.conv[0], _sliced_conv(layer.get_submodule(names.conv[0]),
                                                        rows, previous))
        norm = _optional(layer, names.conv[1])
        if isinstance(norm, (nn.LayerNorm, nn.GroupNorm)):
            layer.set_submodule(names.conv[1], _sliced_norm(norm, rows))
        layer.in_conv_dim, layer.out_conv_dim = (len(previous) if previous is not None else 1,
                                                 len(rows))
        previous = rows
        sizes.append(len(rows))
    norm = _optional(hf, names.projection[0])
    if isinstance(norm, nn.LayerNorm):
        hf.set_submodule(names.projection[0], _sliced_norm(norm, previous))
    hf.set_submodule(names.projection[1], _select(hf.get_submodule(names.projection[1]),
                                                  cols=previous))
    hf.config.conv_dim = sizes
    for name, units in add_unit_masks(hf).items():
        units.keep.copy_(keeps[name])
    return shrink(hf)


class BudgetPruning(Strategy):
    """Prune CNN channels, attention heads and FFN units together until the backbone's FLOPs
    for ``seconds`` of audio are at most ``target_flops_ratio`` of the dense backbone's (the
    module's docstring says how); the deployed backbone is physically shrunk.

    Put it after ``InitFrom`` (it prunes the fine-tuned model) and after ``Distillation`` (its
    teacher is the model before pruning). With SALAD token dropping in the same list, the last
    conv layer keeps every channel: the detector reads them.

    Arguments
    ---------
    target_flops_ratio : float
        The pruned backbone's FLOPs over the dense backbone's, at most.
    prune_every : int
        Optimizer steps between pruning events (importance gathered in between).
    prune_until : int
        The step of the last event, when the target is reached.
    seconds : float
        The audio length the FLOPs are counted on (the recipes' cost is on 10 s).

    Example
    -------
    >>> pruning = BudgetPruning(0.33, prune_every=10, prune_until=100)
    >>> [round(pruning.ratio_at(s), 3) for s in (0, 50, 100)], pruning.at_target(99)
    ([1.0, 0.414, 0.33], False)
    """

    keeps_backbone_weights = False

    def __init__(self, target_flops_ratio=0.33, prune_every=20, prune_until=200, seconds=10.0):
        self.target = float(target_flops_ratio)
        self.prune_every, self.prune_until = int(prune_every), int(prune_until)
        self.seconds = float(seconds)
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"target_flops_ratio={target_flops_ratio} must be in (0, 1]")
        if self.prune_every < 1 or self.prune_until < 1:
            raise ValueError("prune_every and prune_until are optimizer steps, at least 1")
        self.flops = self.minimum = None
        self.ratio = 1.0  # the masked backbone's FLOPs over the dense one's, at the last eval

    def ratio_at(self, step):
        """The budget, as a share of the dense backbone's FLOPs, after ``step`` steps.

        Arguments
        ---------
        step : int
            Optimizer steps done.

        Returns
        -------
        float
        """
        left = max(0.0, 1.0 - step / self.prune_until)
        return self.target + (1.0 - self.target) * left ** 3

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``: count the dense backbone's FLOPs, refuse a target that no
        pruning can reach, gate every unit."""
        self.flops = BackboneFlops(ssl, self.seconds, backbone_rate(ssl))
        detector = any(isinstance(s, TokenDropping) and s.dropper.detector is not None
                       for s in hparams.get("strategies") or [])
        self.minimum = self.flops.minimum_counts(keep_last_conv=detector)
        smallest = self.flops.count(self.minimum) / self.flops.dense
        if smallest > self.target:
            raise ValueError(
                f"target_flops_ratio={self.target:g} is out of reach: the smallest backbone "
                f"this pruning leaves (one CNN channel per layer, one head and one FFN unit per "
                f"block; the positional convolution is not pruned) costs {smallest:.4f} of the "
                f"dense backbone's FLOPs; give at least {math.ceil(smallest * 1000) / 1000:g}")
        for gate in add_budget_gates(ssl).values():
            gate.capture = True

    def on_step(self, ssl, step):
        """See ``Strategy.on_step``: gather the step's importance; at an event, prune to the
        schedule's budget; after the last, stop gathering."""
        gates = budget_gates(ssl)
        if step > self.prune_until:
            for gate in gates.values():
                gate.capture = False
            return
        for gate in gates.values():
            gate.end_step()
        if step % self.prune_every == 0 or step == self.prune_until:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                for gate in gates.values():  # every process prunes the same units
                    torch.distributed.all_reduce(gate.score)
            if not any(bool(gate.score.any()) for gate in gates.values()):
                logger.warning("budget pruning at step %d: no gradient reached the gates since "
                               "the last event; units are chosen by FLOPs alone", step)
            removed = prune_to_budget(gates, self.flops, self.ratio_at(step) * self.flops.dense,
                                      self.minimum)
            for gate in gates.values():
                gate.score.zero_()
            logger.info("budget pruning at step %d: %d units removed, backbone FLOPs %.4f of "
                        "dense", step, removed, self._ratio(gates))
        if step >= self.prune_until:
            for gate in gates.values():
                gate.capture = False

    def _ratio(self, gates):
        return self.flops.count(kept_counts(gates)) / self.flops.dense

    def at_target(self, step):
        """See ``Strategy.at_target``."""
        return step >= self.prune_until

    def before_eval(self, ssl):
        """See ``Strategy.before_eval``: note the masked backbone's FLOPs share."""
        self.ratio = self._ratio(budget_gates(ssl))

    def stage_stats(self, stage):
        """See ``Strategy.stage_stats``: ``flops_ratio``, the backbone's FLOPs share."""
        return {"flops_ratio": round(self.ratio, 4)}

    def deployable(self, ssl):
        """See ``Strategy.deployable``: the pruned units physically removed (in place)."""
        shrink_budget(ssl)
        return ssl

    def deployed_cost(self, results, ssl, seconds):
        """See ``Strategy.deployed_cost``: the shrunk backbone's FLOPs counted
        (``backbone_flops_<s>s``), the dense one's (``..._dense``) and their ratio
        (``backbone_flops_ratio``, what ``target_flops_ratio`` bounds)."""
        if self.flops is None or seconds != self.seconds:
            return
        shrunk = shrink_budget(copy.deepcopy(hf_model(ssl)).cpu())
        flops = self.flops.measure(shrunk)
        tag = f"{seconds:g}s"
        ratio = flops / self.flops.dense
        results.update({f"backbone_flops_{tag}": flops,
                        f"backbone_flops_{tag}_dense": self.flops.dense,
                        "backbone_flops_ratio": round(ratio, 4)})
        if ratio > self.target + 1e-9:
            logger.warning("the deployed backbone costs %.4f of the dense one's FLOPs, above "
                           "target_flops_ratio=%g: training ended before prune_until=%d",
                           ratio, self.target, self.prune_until)

    @property
    def sparsity(self):
        """See ``Strategy.sparsity``: the share of the backbone's FLOPs the target removes."""
        return round(1.0 - self.target, 6)
