"""Adapters and LoRA on a frozen SSL backbone, through SpeechBrain's ``speechbrain.nnet.adapters``.

``AdaptedModel`` freezes the transformers model and wraps the chosen ``nn.Linear`` layers of every
transformer block in place: with a Houlsby adapter (``HoulsbyAdapterLinear``: the layer's output
``h`` becomes ``h + up(swish(down(h)))``) or with LoRA (``W x`` becomes
``W x + alpha / rank * B A x``). The targets come from the family table
(``s3brain.backbone.families``): ``attention`` (q/k/v/out projections), ``ffn`` (intermediate and
output dense) or single layers by their last name (``out_proj``, ``output_dense``). The adapters
live inside the backbone, as PEFT's do, so they are saved and resumed with it; LoRA folds back into
plain ``nn.Linear`` weights (``merge_lora``), a Houlsby adapter, being nonlinear, does not.

Example
-------
>>> import torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
>>> x = torch.randn(1, 1600)
>>> with torch.no_grad():
...     before = model(x).last_hidden_state
>>> lora = LoRAAdapters(model, rank=4, targets=["attention"])
>>> with torch.no_grad():
...     torch.equal(model(x).last_hidden_state, before)
True
>>> trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
>>> sum(p.numel() for p in lora.parameters()), trainable  # only the LoRA tensors train
(2048, 2048)
>>> merged = merge_lora(model)
>>> any(isinstance(m, LoRALinear) for m in merged.modules())
False
"""

import logging

import torch
from speechbrain.nnet import adapters as sb_adapters
from torch import nn

from s3brain.backbone.families import family, hf_model
from s3brain.strategies.base import Strategy

logger = logging.getLogger(__name__)


#: the target groups a yaml may name, as fields of ``s3brain.backbone.families.LayerNames``
TARGET_GROUPS = ("attention", "ffn")


def target_layers(model, targets):
    """The ``fnmatch`` patterns (``AdaptedModel``'s ``target_layers``) of the chosen linears of
    every transformer block of ``model``, spelled by the model's family table.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper of one.
    targets : list of str
        Groups (``attention``, ``ffn``) or single layers named by the table's names
        (``attention.q_proj``) or their last part (``q_proj``, ``output_dense``).

    Returns
    -------
    list of str
        Patterns over the transformers model's module names, in the table's order.

    Raises
    ------
    ValueError
        A target that is neither a group nor a layer of the table.

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> model = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64))
    >>> patterns = target_layers(model, ["out_proj", "ffn"])
    >>> len(patterns), patterns[0]
    (3, 'encoder.layers.*.attention.out_proj')
    """
    names = family(model)
    layers = names.attention + names.ffn
    chosen = set()
    for target in [targets] if isinstance(targets, str) else targets:
        if target in TARGET_GROUPS:
            chosen.update(getattr(names, target))
            continue
        match = [layer for layer in layers if target in (layer, layer.rsplit(".", 1)[-1])]
        if not match:
            short = ", ".join(layer.rsplit(".", 1)[-1] for layer in layers)
            raise ValueError(f"adapter target {target!r} is not a layer of the "
                             f"{hf_model(model).config.model_type} table: use a group "
                             f"({', '.join(TARGET_GROUPS)}) or one of {short}")
        chosen.update(match)
    return [f"{names.blocks}.*.{layer}" for layer in layers if layer in chosen]


class LoRALinear(sb_adapters.LoRA):
    """SpeechBrain's ``LoRA`` around an ``nn.Linear``, that also shows the effective ``weight``
    (``W + scaling * B A``) and ``bias`` as a linear does.

    We keep this subclass because WavLM's attention does not call its projections: it hands
    their ``weight`` and ``bias`` to ``F.multi_head_attention_forward``, which a plain wrapper
    lacks. The up-projection ``B`` starts at zero (SpeechBrain's init): at first the layer
    computes what the pretrained one does.

    Arguments
    ---------
    target_module : torch.nn.Linear
        The pretrained layer (frozen).
    rank : int
        Rank of the update.
    alpha : float
        The update is scaled by ``alpha / rank``.

    Example
    -------
    >>> import torch
    >>> lora = LoRALinear(nn.Linear(6, 4), rank=2, alpha=4.0)
    >>> _ = torch.nn.init.normal_(lora.adapter_up_proj.weight)
    >>> x = torch.randn(3, 6)
    >>> torch.allclose(lora(x), nn.functional.linear(x, lora.weight, lora.bias), atol=1e-6)
    True
    """

    @property
    def weight(self):
        """The effective weight, ``W + scaling * B A``."""
        return self.pretrained_module.weight + self.scaling * (
            self.adapter_up_proj.weight @ self.adapter_down_proj.weight)

    @property
    def bias(self):
        """The pretrained bias."""
        return self.pretrained_module.bias

    def merged(self):
        """The pretrained ``nn.Linear`` with the update folded into its weight.

        Returns
        -------
        torch.nn.Linear
            The wrapped layer itself, changed in place.
        """
        with torch.no_grad():
            self.pretrained_module.weight.copy_(self.weight)
        return self.pretrained_module


class HoulsbyAdapter(sb_adapters.HoulsbyAdapterLinear):
    """SpeechBrain's ``HoulsbyAdapterLinear``, started at the identity.

    SpeechBrain zeroes the projections' biases but leaves the up-projection's weight at its
    random init, so a fresh adapter changes the pretrained model's output. We zero that weight
    too: at first the backbone computes exactly what the pretrained one does. ``weight`` and
    ``bias`` are the wrapped layer's, for code that reads the linears' weights (sparsity); the
    adapter itself is nonlinear and cannot be folded into them.

    Arguments
    ---------
    target_linear : torch.nn.Linear
        The pretrained layer (frozen).
    projection_size : int
        Width of the bottleneck.

    Example
    -------
    >>> import torch
    >>> linear = nn.Linear(8, 8)
    >>> x = torch.randn(2, 8)
    >>> torch.equal(HoulsbyAdapter(linear, 3)(x), linear(x))
    True
    """

    def __init__(self, target_linear, projection_size):
        super().__init__(target_linear, projection_size)
        nn.init.zeros_(self.adapter_up_proj.weight)

    @property
    def weight(self):
        """The wrapped layer's weight."""
        return self.pretrained_linear.weight

    @property
    def bias(self):
        """The wrapped layer's bias."""
        return self.pretrained_linear.bias


#: the module classes this file adds to a backbone
ADAPTER_CLASSES = (LoRALinear, HoulsbyAdapter)


def added_adapters(model):
    """The adapters and LoRA layers in ``model``, by module name.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper of one.

    Returns
    -------
    dict
        ``{name: LoRALinear or HoulsbyAdapter}``, names relative to the transformers model.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64))
    >>> _ = HoulsbyAdapters(model, bottleneck=4)
    >>> list(added_adapters(model))
    ['encoder.layers.0.feed_forward.output_dense', 'encoder.layers.1.feed_forward.output_dense']
    """
    return {name: module for name, module in hf_model(model).named_modules()
            if isinstance(module, ADAPTER_CLASSES)}


def adapter_state_dict(model):
    """The tensors the adapters or LoRA layers add to ``model`` (what a task stores beside the
    shared backbone), under their state-dict names in the transformers model.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper of one.

    Returns
    -------
    dict
        ``{name: tensor}``.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64))
    >>> _ = LoRAAdapters(model, rank=2, targets=["output_dense"])
    >>> sorted(name.split("output_dense.")[1] for name in adapter_state_dict(model))
    ['adapter_down_proj.weight', 'adapter_up_proj.weight']
    """
    state = {}
    for name, module in added_adapters(model).items():
        for part in ("adapter_down_proj", "adapter_up_proj"):
            for key, tensor in getattr(module, part).state_dict().items():
                state[f"{name}.{part}.{key}"] = tensor
    return state


def merge_lora(model):
    """Fold every LoRA layer of ``model`` into a plain ``nn.Linear`` (``W + scaling * B A``), in
    place, as PEFT's ``merge_and_unload``; Houlsby adapters stay (they are nonlinear).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper of one.

    Returns
    -------
    torch.nn.Module
        ``model``, its transformers model's state-dict keys those of the plain backbone again.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64))
    >>> keys = set(model.state_dict())
    >>> _ = LoRAAdapters(model, rank=2)
    >>> set(merge_lora(model).state_dict()) == keys
    True
    """
    inner = hf_model(model)
    for name, module in added_adapters(inner).items():
        if isinstance(module, LoRALinear):
            sb_adapters.replace_module(inner, name, module.merged())
    return model


class AddedAdapters(nn.ModuleList):
    """Adapters of one class put into the chosen linears of every transformer block of
    ``model`` by SpeechBrain's ``AdaptedModel``, which freezes every backbone tensor. This list
    holds the added projections only (the trainable tensors); the adapters themselves sit in the
    backbone, so that they are saved, resumed and moved with it.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper of one (changed in place).
    adapter_class : type
        ``LoRALinear`` or ``HoulsbyAdapter``.
    targets : list of str
        See ``target_layers``.
    **adapter_kwargs
        Passed to ``adapter_class``.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64))
    >>> added = AddedAdapters(model, LoRALinear, ["q_proj"], rank=2)
    >>> added.layer_names
    ['encoder.layers.0.attention.q_proj', 'encoder.layers.1.attention.q_proj']
    """

    def __init__(self, model, adapter_class, targets, **adapter_kwargs):
        inner = hf_model(model)
        if added_adapters(inner):
            raise ValueError("the backbone already has adapters or LoRA layers: set up one "
                             "adapter strategy per run")
        patterns = target_layers(inner, targets)
        adapted = sb_adapters.AdaptedModel(inner, adapter_class, target_layers=patterns,
                                           adapter_kwargs=adapter_kwargs)
        added = [inner.get_submodule(name) for name in adapted.replace_layers]
        super().__init__([nn.ModuleList([m.adapter_down_proj, m.adapter_up_proj])
                          for m in added])
        self.layer_names = list(adapted.replace_layers)


def _check_called(model, modules):
    """Raise if a forward of ``model`` leaves some of ``modules`` uncalled: a layer whose weight
    the modelling code reads directly (WavLM's attention projections) ignores a wrapper that
    cannot be expressed as a weight."""
    called = set()
    hooks = [module.register_forward_hook(lambda *_, name=name: called.add(name))
             for name, module in modules.items()]
    training = model.training
    try:
        model.eval()  # no LayerDrop, no SpecAugment
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 16000, device=device))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    missed = [name for name in modules if name not in called]
    if missed:
        raise ValueError(f"Houlsby adapters on {missed} would never run: the "
                         f"{model.config.model_type} forward reads these layers' weights "
                         f"directly. Target other layers (adapter_targets: [ffn]) or use LoRA.")


class HoulsbyAdapters(AddedAdapters):
    """Houlsby bottleneck adapters (``HoulsbyAdapter``) after the chosen linears of every
    transformer block, the backbone frozen. The default target, each block's FFN output dense,
    puts the adapter after the feed-forward; Houlsby et al. also put one after the attention
    (``targets=["out_proj", "output_dense"]``, not on WavLM, whose attention reads its output
    projection's weight directly).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper of one (changed in place).
    bottleneck : int
        Width of each adapter's down-projection.
    targets : list of str
        See ``target_layers``.

    Example
    -------
    >>> import torch
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64)).eval()
    >>> x = torch.randn(1, 1600)
    >>> with torch.no_grad():
    ...     before = model(x).last_hidden_state
    >>> adapters = HoulsbyAdapters(model, bottleneck=8)
    >>> with torch.no_grad():
    ...     torch.equal(model(x).last_hidden_state, before)
    True
    >>> sum(p.numel() for p in adapters.parameters())  # 2 x (32 x 8 + 8 + 8 x 32 + 32)
    1104
    """

    def __init__(self, model, bottleneck=64, targets=("output_dense",)):
        super().__init__(model, HoulsbyAdapter, targets, projection_size=bottleneck)
        inner = hf_model(model)
        _check_called(inner, {name: inner.get_submodule(name) for name in self.layer_names})


class LoRAAdapters(AddedAdapters):
    """LoRA (SpeechBrain's, see ``LoRALinear``) on the chosen linears of every transformer block, the
    backbone frozen: ``rank * (in + out)`` trainable tensors per layer, folded back into plain
    weights by ``merge_lora``.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper of one (changed in place).
    rank : int
        Rank of each update.
    alpha : float
        Each update is scaled by ``alpha / rank``.
    targets : list of str
        See ``target_layers``.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64))
    >>> lora = LoRAAdapters(model, rank=4, alpha=8.0, targets=["ffn"])
    >>> sum(p.numel() for p in lora.parameters())  # 2 blocks x 4 x ((32 + 64) + (64 + 32))
    1536
    """

    def __init__(self, model, rank=8, alpha=8.0, targets=("attention", "ffn")):
        super().__init__(model, LoRALinear, targets, rank=rank, alpha=alpha)


class Adapters(Strategy):
    """Adapter tuning: Houlsby adapters (``s3brain.strategies.adapters.HoulsbyAdapters``, SpeechBrain's
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
        The linears adapted in every block (``s3brain.strategies.adapters.target_layers``).

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
        s3brain.strategies.adapters.AddedAdapters
            The added trainable projections.
        """

        return HoulsbyAdapters(ssl, bottleneck=self.bottleneck, targets=self.targets)

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``."""
        added = self.add(ssl)
        logger.info("%s on %d layers (%s): %d trainable parameters, backbone frozen",
                    type(self).__name__, len(added.layer_names), ", ".join(self.targets),
                    sum(p.numel() for p in added.parameters()))

    def export(self, deployment):
        """See ``Strategy.export``: the adapters stay in the deployed backbone (nonlinear, not
        merged), which is built with them."""
        return {"backbone": {"adapters": {"bottleneck": self.bottleneck,
                                          "targets": list(self.targets)}}}

    def task_payload(self, path, ssl, head, info):
        """See ``Strategy.task_payload``: the adapters' tensors and the head's."""

        tensors = [*adapter_state_dict(ssl).values(), *head.state_dict().values()]
        return sum(t.numel() * t.element_size() for t in tensors)


class LoRA(Adapters):
    """LoRA (``s3brain.strategies.adapters.LoRAAdapters``, SpeechBrain's ``LoRA``) on the chosen linears of
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
        The linears adapted in every block (``s3brain.strategies.adapters.target_layers``).

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
        s3brain.strategies.adapters.AddedAdapters
            The added trainable projections.
        """

        return LoRAAdapters(ssl, rank=self.rank, alpha=self.alpha, targets=self.targets)

    def export(self, deployment):
        """See ``Strategy.export``: nothing to add, the deployed backbone has LoRA merged."""
        return {}

    def deployable(self, ssl):
        """See ``Strategy.deployable``: every LoRA layer merged into its ``nn.Linear``."""

        return merge_lora(ssl)
