"""Transformers classes for a structurally pruned SSL model: per-layer FFN widths and head counts.

This file is self-contained (it imports only torch and transformers) because
``s3brain.structured.save_shrunk`` copies it next to ``config.json`` as ``modeling_shrunk.py``:
the saved model then loads with transformers alone,
``AutoModel.from_pretrained(folder, trust_remote_code=True)``. The config carries
``layer_intermediate_sizes`` and ``layer_attention_heads`` (one value per transformer block);
every other part is the stock model of the family.
"""

from torch import nn
from transformers import (Data2VecAudioConfig, Data2VecAudioModel, HubertConfig, HubertModel,
                          Wav2Vec2Config, Wav2Vec2Model)


def resize_layers(model, intermediate_sizes, attention_heads):
    """Replace each block's FFN and attention projections by ones of the given sizes (weights
    uninitialised; ``from_pretrained`` or the caller fills them)."""
    for layer, width, heads in zip(model.encoder.layers, intermediate_sizes, attention_heads):
        ffn = layer.feed_forward
        hidden = ffn.intermediate_dense.in_features
        ffn.intermediate_dense = nn.Linear(hidden, width)
        ffn.output_dense = nn.Linear(width, hidden)
        attention = layer.attention
        inner = heads * attention.head_dim
        attention.q_proj = nn.Linear(hidden, inner)
        attention.k_proj = nn.Linear(hidden, inner)
        attention.v_proj = nn.Linear(hidden, inner)
        attention.out_proj = nn.Linear(inner, hidden)
        attention.num_heads = heads


def _shrunk_classes(config_base, model_base):
    class ShrunkConfig(config_base):
        def __init__(self, layer_intermediate_sizes=None, layer_attention_heads=None, **kwargs):
            super().__init__(**kwargs)
            self.layer_intermediate_sizes = layer_intermediate_sizes
            self.layer_attention_heads = layer_attention_heads

    class ShrunkModel(model_base):
        config_class = ShrunkConfig

        def __init__(self, config):
            super().__init__(config)
            if config.layer_intermediate_sizes is not None:
                resize_layers(self, config.layer_intermediate_sizes, config.layer_attention_heads)
                self.post_init()

    for cls, base in ((ShrunkConfig, config_base), (ShrunkModel, model_base)):
        cls.__name__ = cls.__qualname__ = f"Shrunk{base.__name__}"
    return ShrunkConfig, ShrunkModel


ShrunkWav2Vec2Config, ShrunkWav2Vec2Model = _shrunk_classes(Wav2Vec2Config, Wav2Vec2Model)
ShrunkHubertConfig, ShrunkHubertModel = _shrunk_classes(HubertConfig, HubertModel)
ShrunkData2VecAudioConfig, ShrunkData2VecAudioModel = _shrunk_classes(Data2VecAudioConfig,
                                                                      Data2VecAudioModel)
#: model_type -> (config class name, model class name) in this file
CLASSES = {"wav2vec2": ("ShrunkWav2Vec2Config", "ShrunkWav2Vec2Model"),
           "hubert": ("ShrunkHubertConfig", "ShrunkHubertModel"),
           "data2vec-audio": ("ShrunkData2VecAudioConfig", "ShrunkData2VecAudioModel")}
