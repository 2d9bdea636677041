"""What each backbone family's transformers modelling file looks like to this project's
mechanisms: the one place that spells a family's module names and layout facts (masks,
structured pruning and shrinking, early exit, SALAD, adapters and the backbone loader read
them here), and the one opened-up forward of a backbone (``feature_frames_and_mask``, then
``iter_blocks`` / ``run_blocks``: frames dropped before the transformer, a stop after any block,
every block's output), so a new transformers release or family is fixed in this file.

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

import contextlib
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from speechbrain.dataio.dataio import length_to_mask


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
    and ignores the flag.

    Arguments
    ---------
    blocks : str
        Module name of the blocks' list.
    ffn : tuple of str
        Names of the feed-forward linear layers inside a block.
    attention : tuple of str
        Names of the attention linear layers inside a block.
    position_bias : bool
        The blocks hand a relative position bias on (WavLM).
    config_defaults : tuple
        ``(attribute, value)`` pairs set on a config that lacks them.
    large_layout : bool
        The family has the stable-layer-norm layout.
    conv_layers : str
        Module name of the CNN feature encoder's list of conv layers.
    conv : tuple of str
        Names inside a conv layer: its convolution, and its norm over the channels (group
        norm in the base layout's first layer, layer norm in the large layout's, none else).
    projection : tuple of str
        Names of the feature projection's layer norm over the CNN channels (absent from a
        HuBERT with ``feat_proj_layer_norm`` off) and its linear layer.

    Example
    -------
    >>> FAMILIES["wavlm"].position_bias, FAMILIES["data2vec-audio"].large_layout
    (True, False)
    """

    blocks: str
    ffn: tuple
    attention: tuple
    position_bias: bool = False
    config_defaults: tuple = ()
    large_layout: bool = True
    conv_layers: str = "feature_extractor.conv_layers"
    conv: tuple = ("conv", "layer_norm")
    projection: tuple = ("feature_projection.layer_norm", "feature_projection.projection")


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
    """The ``LayerNames`` of ``model``'s family; a clear error for a model type without a table.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model, or a SpeechBrain wrapper of one.

    Returns
    -------
    LayerNames

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> family(HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8,), conv_stride=(5,),
    ...     conv_kernel=(10,), num_feat_extract_layers=1))).blocks
    'encoder.layers'
    """
    model_type = hf_model(model).config.model_type
    if model_type not in FAMILIES:
        raise ValueError(f"no layer table for model type {model_type!r} (known: "
                         f"{', '.join(sorted(FAMILIES))}): use a checkpoint of one of these "
                         f"families, or add its module names to s3brain.backbone.families.FAMILIES")
    return FAMILIES[model_type]


def transformer_blocks(model):
    """The transformer blocks of ``model`` (the family table's ``blocks``).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model, or a SpeechBrain wrapper of one.

    Returns
    -------
    torch.nn.ModuleList
        The blocks, in order (see the module's example).
    """
    return hf_model(model).get_submodule(family(model).blocks)


def is_stable_layer_norm(model):
    """Whether ``model`` has the large layout (``do_stable_layer_norm``: pre-LN blocks, the
    encoder's ``layer_norm`` applied after the last block), not the base one (post-LN blocks, the
    encoder's ``layer_norm`` before the first). data2vec-audio has only the latter.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model, or a SpeechBrain wrapper of one.

    Returns
    -------
    bool
        True for the large layout (see the module's example).
    """
    return family(model).large_layout and bool(
        getattr(hf_model(model).config, "do_stable_layer_norm", False))


def hf_model(model):
    """The transformers model inside a SpeechBrain wrapper (``.model``, itself possibly inside
    DDP's ``.module``), or the model itself.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model, or a (DDP-wrapped) SpeechBrain wrapper of one.

    Returns
    -------
    transformers.PreTrainedModel

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> inner = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8,), conv_stride=(5,),
    ...     conv_kernel=(10,), num_feat_extract_layers=1))
    >>> wrapper = torch.nn.Module()
    >>> wrapper.model = inner
    >>> hf_model(wrapper) is inner and hf_model(inner) is inner
    True
    """
    inner = getattr(model, "module", model)  # DDP
    inner = getattr(inner, "model", inner)
    if not hasattr(inner, "config"):
        raise TypeError(f"expected a transformers model or a SpeechBrain wrapper of one, "
                        f"got {type(model).__name__}")
    return inner


class Frames(NamedTuple):
    """The transformer's input frames (what ``feature_frames_and_mask`` returns).

    Arguments
    ---------
    hidden : torch.Tensor
        ``[batch, frames, hidden]``, after the feature projection (and SpecAugment in training).
    mask : torch.Tensor or None
        ``[batch, frames]`` bool, True on real frames; None when no lengths were given.
    lengths : torch.Tensor or None
        Frames per utterance; None with ``mask``.
    keep : torch.Tensor or None
        With a ``keep_fn``, ``[batch, CNN frames]`` bool, the CNN frames kept; else None.

    Example
    -------
    >>> Frames(torch.zeros(1, 3, 4), None, None, None).hidden.shape
    torch.Size([1, 3, 4])
    """

    hidden: torch.Tensor
    mask: Optional[torch.Tensor]
    lengths: Optional[torch.Tensor]
    keep: Optional[torch.Tensor]


def feature_frames_and_mask(model, wav, wav_lengths=None, keep_fn=None):
    """The first half of the model's forward: CNN features, then (with ``keep_fn``) only the
    frames it keeps, feature projection and SpecAugment (training only), as the model does.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``FAMILIES``, or a SpeechBrain wrapper of one.
    wav : torch.Tensor
        ``[batch, samples]``, as the model reads it (already normalised if it should be).
    wav_lengths : torch.Tensor, optional
        Valid samples of each utterance (integers); None when nothing is padded.
    keep_fn : callable, optional
        ``(CNN features [batch, frames, channels], frame lengths [batch]) -> keep [batch,
        frames]`` bool: the frames that reach the transformer, packed in order; padding frames
        are never kept, and an utterance with frames keeps at least its first.

    Returns
    -------
    Frames
        ``(hidden, mask, lengths, keep)``.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
    >>> frames = feature_frames_and_mask(model, torch.randn(2, 1600), torch.tensor([1600, 800]))
    >>> frames.hidden.shape, frames.lengths.tolist(), frames.mask.sum(1).tolist()
    (torch.Size([2, 159, 32]), [159, 79], [159, 79])
    """
    model = hf_model(model)
    features = model.feature_extractor(wav).transpose(1, 2)
    lengths = None
    if wav_lengths is not None:
        lengths = model._get_feat_extract_output_lengths(wav_lengths).long()
        lengths = lengths.clamp(max=features.shape[1])
    keep = None
    if keep_fn is not None:
        if lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.long,
                                 device=features.device)
        keep = keep_fn(features, lengths)
        keep = keep & _padding_mask(lengths.to(keep.device), features.shape[1])
        empty = (keep.sum(1) == 0) & (lengths.to(keep.device) > 0)
        keep[empty, 0] = True  # an utterance keeps at least one frame
        features, lengths = pack_kept(features, keep)
    hidden = model.feature_projection(features)
    hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # HuBERT returns no tuple
    mask = None if lengths is None else _padding_mask(lengths.to(hidden.device), hidden.shape[1])
    hidden = model._mask_hidden_states(hidden, attention_mask=mask)
    return Frames(hidden, mask, lengths, keep)


def iter_blocks(model, hidden, mask=None):
    """The second half of the model's forward, block by block: a generator of ``(block input,
    block output)``, so that a caller may stop after any block (the blocks after it never run).

    Done as the family's encoder does: padded frames zeroed, the positional convolution added,
    the encoder's layer norm before the first block in the base layout (post-LN blocks), dropout;
    WavLM's relative position bias handed from each block to the next; LayerDrop in training (a
    block it drops yields nothing, as it is missing from transformers' ``hidden_states``). The
    outputs are the blocks' own: in the large layout the last one still needs
    ``final_layer_norm`` to be the model's ``last_hidden_state``.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``FAMILIES``, or a SpeechBrain wrapper of one.
    hidden : torch.Tensor
        ``[batch, frames, hidden]``, the transformer's input (``feature_frames_and_mask``).
    mask : torch.Tensor, optional
        ``[batch, frames]``, True (or 1) on real frames; None when nothing is padded.

    Yields
    ------
    tuple of torch.Tensor
        ``(block input, block output)``, each ``[batch, frames, hidden]``.

    Returns
    -------
    generator
        Of the pairs above, one per block run.

    Example
    -------
    >>> from transformers import WavLMConfig, WavLMModel
    >>> model = WavLMModel(WavLMConfig(hidden_size=32, num_hidden_layers=3,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
    >>> wav = torch.randn(1, 1600)
    >>> with torch.no_grad():
    ...     first = next(iter_blocks(model, feature_frames_and_mask(model, wav).hidden))[1]
    ...     theirs = model(wav, output_hidden_states=True).hidden_states[1]
    >>> torch.allclose(first, theirs, atol=1e-6)
    True
    """
    hidden, attention_mask = _encoder_input(model, hidden, mask)
    yield from _each_block(model, hidden, attention_mask)


def run_blocks(model, hidden, mask=None, every_block=False):
    """The whole transformer on ``hidden`` (``iter_blocks`` run to the end): the model's
    ``last_hidden_state``, and with ``every_block`` each block's own output too.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``FAMILIES``, or a SpeechBrain wrapper of one.
    hidden : torch.Tensor
        ``[batch, frames, hidden]``, the transformer's input (``feature_frames_and_mask``).
    mask : torch.Tensor, optional
        ``[batch, frames]``, True on real frames; None when nothing is padded.
    every_block : bool
        Also return the list of the blocks' outputs (before the large layout's final layer
        norm), one per block run.

    Returns
    -------
    torch.Tensor or tuple
        ``last_hidden_state`` ``[batch, frames, hidden]``; with ``every_block``,
        ``(last_hidden_state, block outputs)``.

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> model = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2, do_stable_layer_norm=True,
    ...     feat_extract_norm="layer")).eval()
    >>> wav = torch.randn(2, 1600)
    >>> mask = torch.tensor([[1] * 1600, [1] * 1000 + [0] * 600])
    >>> with torch.no_grad():
    ...     frames = feature_frames_and_mask(model, wav, mask.sum(1))
    ...     last, blocks = run_blocks(model, frames.hidden, frames.mask, every_block=True)
    ...     theirs = model(wav, attention_mask=mask).last_hidden_state
    >>> len(blocks), torch.allclose(last, theirs, atol=1e-5)
    (2, True)
    """
    hidden, attention_mask = _encoder_input(model, hidden, mask)
    outputs = []
    for _, hidden in _each_block(model, hidden, attention_mask):
        outputs.append(hidden)
    last = final_layer_norm(model, hidden)  # LayerDrop may have dropped every block
    return (last, outputs) if every_block else last


def _encoder_input(model, hidden, mask):
    """The encoder's steps before its blocks: ``(first block's input, the blocks' attention
    mask)``."""
    model = hf_model(model)
    encoder = model.encoder
    if mask is not None:
        mask = mask.bool()
        hidden = hidden.masked_fill(~mask.unsqueeze(-1), 0.0)  # padded frames are zeros
    if family(model).position_bias:  # WavLM's attention reads the padding mask itself
        attention_mask = mask
    else:
        from transformers.masking_utils import create_bidirectional_mask

        attention_mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden,
                                                   attention_mask=mask)
    hidden = hidden + encoder.pos_conv_embed(hidden)
    if not is_stable_layer_norm(model):
        hidden = encoder.layer_norm(hidden)
    return encoder.dropout(hidden), attention_mask


def _each_block(model, hidden, attention_mask):
    """The blocks in turn, with LayerDrop: ``(block input, block output)`` for each block run."""
    model = hf_model(model)
    encoder, config = model.encoder, model.config
    position_bias_passed_on = family(model).position_bias
    runs_dropped_blocks = _runs_dropped_blocks(encoder)
    position_bias = None
    for i, block in enumerate(transformer_blocks(model)):
        # LayerDrop draws as the encoder does; WavLM's first block owns the bias: never dropped
        if encoder.training and config.layerdrop > 0.0 and (i > 0 or not position_bias_passed_on):
            if torch.rand([]) < config.layerdrop and not runs_dropped_blocks:
                continue
        block_input = hidden
        if position_bias_passed_on:
            hidden, position_bias = block(hidden, attention_mask=attention_mask,
                                          position_bias=position_bias)
        else:
            hidden = block(hidden, attention_mask=attention_mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # transformers < 5
        yield block_input, hidden


def final_layer_norm(model, block_output):
    """What the encoder makes of a block's output when it is the last: the encoder's layer norm
    in the large layout (there only the last block's output is normalised, and only by it); the
    output as is in the base layout (the encoder's layer norm came before the first block).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``FAMILIES``, or a SpeechBrain wrapper of one.
    block_output : torch.Tensor
        A block's output, ``[..., hidden]``.

    Returns
    -------
    torch.Tensor
        The same shape.

    Example
    -------
    >>> from transformers import Data2VecAudioConfig, Data2VecAudioModel
    >>> model = Data2VecAudioModel(Data2VecAudioConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2, num_conv_pos_embedding_groups=2))
    >>> x = torch.randn(1, 4, 32)
    >>> final_layer_norm(model, x) is x   # base layout
    True
    """
    model = hf_model(model)
    return model.encoder.layer_norm(block_output) if is_stable_layer_norm(model) else block_output


@contextlib.contextmanager
def block_outputs(model):
    """Collect the output of every transformer block of ``model`` (one per block run) while the
    context is open, whatever runs the blocks (the model's own forward, or ``iter_blocks``).

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``FAMILIES``, or a SpeechBrain wrapper of one.

    Yields
    ------
    list of torch.Tensor
        Filled with the blocks' outputs (before the large layout's final layer norm) as they
        run.

    Returns
    -------
    contextlib.AbstractContextManager
        The context giving that list.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
    >>> with torch.no_grad(), block_outputs(model) as blocks:
    ...     out = model(torch.randn(1, 1600))
    >>> len(blocks), torch.equal(blocks[-1], out.last_hidden_state)
    (2, True)
    """
    outputs = []

    def keep_output(module, args, output):
        """Keep a block's output hidden states (WavLM's blocks return a tuple).

        Arguments
        ---------
        module : torch.nn.Module
            The block.
        args : tuple
            Its inputs.
        output : torch.Tensor or tuple
            Its output.
        """
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [block.register_forward_hook(keep_output) for block in transformer_blocks(model)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def pack_kept(features, keep):
    """The kept frames of each utterance, in order, padded with zeros to the batch's longest.

    Arguments
    ---------
    features : torch.Tensor
        ``[batch, frames, channels]``.
    keep : torch.Tensor
        ``[batch, frames]`` bool.

    Returns
    -------
    tuple of torch.Tensor
        ``(packed [batch, longest kept, channels], kept frames per utterance [batch])``.

    Example
    -------
    >>> packed, lengths = pack_kept(torch.arange(4.).view(1, 4, 1),
    ...                             torch.tensor([[True, False, True, True]]))
    >>> packed.squeeze(-1).tolist(), lengths.tolist()
    ([[0.0, 2.0, 3.0]], [3])
    """
    lengths = keep.sum(1)
    out = features.new_zeros(features.shape[0], int(lengths.max()), features.shape[2])
    for b in range(features.shape[0]):
        out[b, : lengths[b]] = features[b, keep[b]]
    return out, lengths


def _padding_mask(lengths, frames):
    """``[batch, frames]`` bool, True on each utterance's first ``lengths`` frames."""
    return length_to_mask(lengths, max_len=frames, dtype=torch.bool)


def _runs_dropped_blocks(encoder):
    """Whether the encoder runs a block LayerDrop dropped anyway (all GPUs in step under
    DeepSpeed ZeRO-3 or FSDP), as transformers' encoders do."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    from transformers.integrations.fsdp import is_fsdp_managed_module

    return is_deepspeed_zero3_enabled() or is_fsdp_managed_module(encoder)
