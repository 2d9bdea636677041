"""What each backbone family's transformers modelling file looks like to this project's
mechanisms: the one place that spells a family's module names and layout facts (masks,
structured pruning and shrinking, early exit, SALAD, adapters and the backbone loader read
them here), so a new transformers release or family is fixed in this file.

Example
-------
>>> from transformers import WavLMConfig, WavLMModel
>>> model = WavLMModel(WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
...     intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
...     num_feat_extract_layers=2, do_stable_layer_norm=True, feat_extract_norm="layer"))
>>> names = family(model)
>>> names.ffn, names.position_bias, len(transformer_blocks(model)), is_stable_layer_norm(model)
(('feed_forward.intermediate_dense', 'feed_forward.output_dense'), True, 2, True)
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerNames:
    """What one model family's transformers modelling file looks like to our mechanisms.

    ``blocks``, ``ffn`` and ``attention`` are module names (the blocks' list, and the linear
    layers inside a block). ``position_bias``: the blocks hand a relative position bias on to the
    next one (WavLM: only the first block owns ``rel_attn_embed``, the others reuse its bias,
    each gated per head by ``gru_rel_pos_linear`` / ``gru_rel_pos_const``). ``config_defaults``:
    config attributes the modelling code reads but the family's config class does not define
    (WavLM's SpecAugment reads ``mask_feature_min_masks``). ``large_layout``: the family has the
    stable-layer-norm layout (``do_stable_layer_norm``); data2vec-audio has only the base one
    and ignores the flag."""

    blocks: str
    ffn: tuple
    attention: tuple
    position_bias: bool = False
    config_defaults: tuple = ()
    large_layout: bool = True


_W2V2_LIKE = LayerNames(
    blocks="encoder.layers",
    ffn=("feed_forward.intermediate_dense", "feed_forward.output_dense"),
    attention=("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj"),
)
#: ``config.model_type`` -> layer names. The four families share the transformers layout; WavLM
#: adds its per-head relative position bias.
FAMILIES = {
    "wav2vec2": _W2V2_LIKE,
    "hubert": _W2V2_LIKE,
    "wavlm": LayerNames(_W2V2_LIKE.blocks, _W2V2_LIKE.ffn, _W2V2_LIKE.attention,
                        position_bias=True, config_defaults=(("mask_feature_min_masks", 0),)),
    "data2vec-audio": LayerNames(_W2V2_LIKE.blocks, _W2V2_LIKE.ffn, _W2V2_LIKE.attention,
                                 large_layout=False),
}


def family(model):
    """The ``LayerNames`` of ``model``'s family (a transformers model or a SpeechBrain wrapper);
    a clear error for a model type without a table."""
    model_type = hf_model(model).config.model_type
    if model_type not in FAMILIES:
        raise ValueError(f"no layer table for model type {model_type!r} (known: "
                         f"{', '.join(sorted(FAMILIES))}): use a checkpoint of one of these "
                         f"families, or add its module names to s3brain.families.FAMILIES")
    return FAMILIES[model_type]


def transformer_blocks(model):
    """The ``nn.ModuleList`` of ``model``'s transformer blocks (the family table's ``blocks``)."""
    return hf_model(model).get_submodule(family(model).blocks)


def is_stable_layer_norm(model):
    """True for the large layout (``do_stable_layer_norm``: pre-LN blocks, the encoder's
    ``layer_norm`` applied after the last block); False for the base layout (post-LN blocks, the
    encoder's ``layer_norm`` before the first). data2vec-audio has only the latter."""
    return family(model).large_layout and bool(
        getattr(hf_model(model).config, "do_stable_layer_norm", False))


def hf_model(model):
    """The transformers model inside a SpeechBrain wrapper (``.model``), or the model itself."""
    inner = getattr(model, "module", model)  # DDP
    inner = getattr(inner, "model", inner)
    if not hasattr(inner, "config"):
        raise TypeError(f"expected a transformers model or a SpeechBrain wrapper of one, "
                        f"got {type(model).__name__}")
    return inner
