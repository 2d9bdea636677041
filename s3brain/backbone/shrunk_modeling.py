"""Transformers classes for a structurally pruned SSL model: per-layer FFN widths and head counts.

This file is self-contained (it imports only torch and transformers) because
``s3brain.strategies.pruning.structured.save_shrunk`` copies it next to ``config.json`` as
``modeling_shrunk.py``: the saved model then loads with transformers alone,
``AutoModel.from_pretrained(folder, trust_remote_code=True)``. The config carries
``layer_intermediate_sizes`` and ``layer_attention_heads`` (one value per transformer block);
every other part is the stock model of the family.

WavLM's attention adds a relative position bias per head, gated per head from that head's slice
of the block input. Its stock attention only works with every head present, so a shrunk WavLM
block gets ``ShrunkWavLMAttention``, which keeps the original indices of its heads
(``layer_attention_head_ids`` in the config) and its own columns of the bias table (in the
stock model only the first block holds the table, shared by all).
"""

import torch
from torch import nn
from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)
from transformers.models.wavlm.modeling_wavlm import WavLMAttention


class ShrunkWavLMAttention(WavLMAttention):
    """WavLM self-attention over a subset ``head_ids`` of the ``full_heads`` heads.

    Same computation as ``WavLMAttention`` restricted to the kept heads: each kept head keeps its
    query/key/value rows, its gate constant, its column of the relative position bias table, and
    reads the same slice of the block input for its gate. Block by block the bias is computed
    from this block's own table (``position_bias`` passed in is ignored, None is passed on).
    """

    def __init__(self, embed_dim, full_heads, head_ids, dropout=0.0, num_buckets=320,
                 max_distance=800):
        nn.Module.__init__(self)
        self.embed_dim, self.full_heads = embed_dim, full_heads
        self.head_ids = [int(i) for i in head_ids]
        self.num_heads = len(self.head_ids)
        self.head_dim = embed_dim // full_heads
        self.scaling = self.head_dim ** -0.5
        self.dropout = dropout
        self.num_buckets, self.max_distance = num_buckets, max_distance
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        self.rel_attn_embed = nn.Embedding(num_buckets, self.num_heads)

    def forward(self, hidden_states, attention_mask=None, position_bias=None, index=0, **kwargs):
        """Gated relative-position self-attention over the kept heads.

        Arguments
        ---------
        hidden_states : torch.Tensor
            The block input, ``[batch, time, embed_dim]``.
        attention_mask : torch.Tensor, optional
            ``[batch, time]``, 1 on real frames, 0 on padding.
        position_bias : torch.Tensor, optional
            Ignored: the bias comes from this block's own table.
        index : int
            The block's index (part of the stock signature, unused).
        **kwargs : dict
            Other arguments of the stock attention, ignored.

        Returns
        -------
        output : torch.Tensor
            ``[batch, time, embed_dim]``.
        attention_weights : None
        position_bias : None
            None, so that the next block computes its own bias.
        """
        batch, length, _ = hidden_states.shape
        heads, dim = self.num_heads, self.head_dim
        bias = self.compute_bias(length, length)  # [heads, T, T]
        ids = torch.tensor(self.head_ids, dtype=torch.long, device=hidden_states.device)
        gate_input = hidden_states.view(batch, length, self.full_heads, dim).index_select(2, ids)
        gate = self.gru_rel_pos_linear(gate_input.transpose(1, 2))
        gate_a, gate_b = torch.sigmoid(gate.view(batch, heads, length, 2, 4).sum(-1)).chunk(2, -1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # [B, heads, T, 1]

        def split(x):
            """``[batch, time, heads * dim] -> [batch, heads, time, dim]``."""
            return x.view(batch, length, heads, dim).transpose(1, 2)

        query = split(self.q_proj(hidden_states)) * self.scaling
        key, value = split(self.k_proj(hidden_states)), split(self.v_proj(hidden_states))
        scores = query @ key.transpose(-1, -2) + gate * bias.unsqueeze(0)
        if attention_mask is not None:  # [B, T], 1 on real frames, as the stock attention takes
            scores = scores.masked_fill(attention_mask.ne(1)[:, None, None, :], float("-inf"))
        probs = nn.functional.dropout(scores.softmax(-1), p=self.dropout, training=self.training)
        out = (probs @ value).transpose(1, 2).reshape(batch, length, heads * dim)
        return self.out_proj(out), None, None


def resize_layers(model, intermediate_sizes, attention_heads, head_ids=None):
    """Replace each block's FFN and attention projections by ones of the given sizes (weights
    uninitialised; ``from_pretrained`` or the caller fills them). ``head_ids`` (WavLM): the
    original indices of each block's kept heads."""
    config = model.config
    for b, (layer, width, heads) in enumerate(zip(model.encoder.layers, intermediate_sizes,
                                                  attention_heads)):
        ffn = layer.feed_forward
        hidden = ffn.intermediate_dense.in_features
        ffn.intermediate_dense = nn.Linear(hidden, width)
        ffn.output_dense = nn.Linear(width, hidden)
        if head_ids is not None:
            layer.attention = ShrunkWavLMAttention(
                hidden, config.num_attention_heads, head_ids[b], config.attention_dropout,
                config.num_buckets, config.max_bucket_distance)
            continue
        attention = layer.attention
        inner = heads * attention.head_dim
        attention.q_proj = nn.Linear(hidden, inner)
        attention.k_proj = nn.Linear(hidden, inner)
        attention.v_proj = nn.Linear(hidden, inner)
        attention.out_proj = nn.Linear(inner, hidden)
        attention.num_heads = heads


def _shrunk_classes(config_base, model_base):
    """The shrunk config and model classes of one model family."""

    class ShrunkConfig(config_base):
        """The family's config plus the per-block sizes of a shrunk model.

        Arguments
        ---------
        layer_intermediate_sizes : list of int, optional
            FFN width of each transformer block; None for an unshrunk model.
        layer_attention_heads : list of int, optional
            Attention heads kept in each block.
        layer_attention_head_ids : list of list of int, optional
            WavLM only: the original indices of each block's kept heads.
        **kwargs : dict
            The family config's own arguments.
        """

        def __init__(self, layer_intermediate_sizes=None, layer_attention_heads=None,
                     layer_attention_head_ids=None, **kwargs):
            super().__init__(**kwargs)
            self.layer_intermediate_sizes = layer_intermediate_sizes
            self.layer_attention_heads = layer_attention_heads
            self.layer_attention_head_ids = layer_attention_head_ids

    class ShrunkModel(model_base):
        """The family's model with each block's FFN and attention resized as its config says
        (``resize_layers``); ``from_pretrained`` then loads the shrunk weights.

        Arguments
        ---------
        config : ShrunkConfig
            The config, with the per-block sizes.
        """

        config_class = ShrunkConfig

        def __init__(self, config):
            super().__init__(config)
            if config.layer_intermediate_sizes is not None:
                resize_layers(self, config.layer_intermediate_sizes, config.layer_attention_heads,
                              config.layer_attention_head_ids)
                self.post_init()

    for cls, base in ((ShrunkConfig, config_base), (ShrunkModel, model_base)):
        cls.__name__ = cls.__qualname__ = f"Shrunk{base.__name__}"
    return ShrunkConfig, ShrunkModel


ShrunkWav2Vec2Config, ShrunkWav2Vec2Model = _shrunk_classes(Wav2Vec2Config, Wav2Vec2Model)


ShrunkHubertConfig, ShrunkHubertModel = _shrunk_classes(HubertConfig, HubertModel)


ShrunkWavLMConfig, ShrunkWavLMModel = _shrunk_classes(WavLMConfig, WavLMModel)


ShrunkData2VecAudioConfig, ShrunkData2VecAudioModel = _shrunk_classes(Data2VecAudioConfig,
                                                                      Data2VecAudioModel)


#: model_type -> (config class name, model class name) in this file
CLASSES = {"wav2vec2": ("ShrunkWav2Vec2Config", "ShrunkWav2Vec2Model"),
           "hubert": ("ShrunkHubertConfig", "ShrunkHubertModel"),
           "wavlm": ("ShrunkWavLMConfig", "ShrunkWavLMModel"),
           "data2vec-audio": ("ShrunkData2VecAudioConfig", "ShrunkData2VecAudioModel")}
