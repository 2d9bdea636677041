"""Tiny random-init models of every supported family and layout, written as a downloaded hub
folder is (``save_pretrained``: ``config.json``, ``model.safetensors``,
``preprocessor_config.json``), for checking that code works with models the project did not make.

Example
-------
>>> import tempfile
>>> from s3brain.backbone import load_ssl
>>> with tempfile.TemporaryDirectory() as tmp:
...     folder = write_tiny_model(f"{tmp}/wavlm-large", "wavlm", "large")
...     ssl = load_ssl(folder, f"{tmp}/save")
>>> type(ssl.model).__name__, ssl.model.config.do_stable_layer_norm
('WavLMModel', True)
"""

from pathlib import Path

#: (family, layout) of every tiny model. data2vec-audio has a single transformers layout
#: (layer-norm CNN, post-LN transformer): it is listed once, as "base".
FAMILY_LAYOUTS = [("wav2vec2", "base"), ("wav2vec2", "large"), ("hubert", "base"),
                  ("hubert", "large"), ("wavlm", "base"), ("wavlm", "large"),
                  ("data2vec-audio", "base")]


def write_tiny_model(folder, family, layout, seed=0):
    """Write a tiny random-init model of ``family`` in ``layout`` to ``folder``.

    The CNN keeps the standard 7 layers and 320x stride (so frame counts are those of real
    checkpoints) with 16 channels; the transformer has 2 blocks of width 32 and 4 heads, with
    LayerDrop 0.1 as the released checkpoints have.

    Arguments
    ---------
    folder : str or Path
        Where to write the model (created).
    family : str
        ``"wav2vec2"``, ``"hubert"``, ``"wavlm"`` or ``"data2vec-audio"``.
    layout : str
        ``"base"`` (group-norm CNN, post-LN transformer) or ``"large"`` (layer-norm CNN,
        ``do_stable_layer_norm``, as wav2vec2-large-lv60 / hubert-large-ll60k / wavlm-large).
    seed : int
        Seed of the random weights.

    Returns
    -------
    Path
        ``folder``.
    """
    from transformers import Wav2Vec2FeatureExtractor

    tiny_model(family, layout, seed).save_pretrained(folder)
    # do_normalize as the large checkpoints' preprocessor (the base ones say False)
    Wav2Vec2FeatureExtractor(do_normalize=layout == "large", return_attention_mask=True) \
        .save_pretrained(folder)
    return Path(folder)


def tiny_model(family, layout, seed=0):
    """A tiny random-init transformers model of ``family`` in ``layout`` (see
    ``write_tiny_model``), in memory.

    Arguments
    ---------
    family : str
        ``"wav2vec2"``, ``"hubert"``, ``"wavlm"`` or ``"data2vec-audio"``.
    layout : str
        ``"base"`` or ``"large"``.
    seed : int
        Seed of the random weights.

    Returns
    -------
    transformers.PreTrainedModel

    Example
    -------
    >>> model = tiny_model("wavlm", "large")
    >>> model.config.do_stable_layer_norm, model.config.num_hidden_layers
    (True, 2)
    """
    import torch
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

    classes = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel),
               "wavlm": (WavLMConfig, WavLMModel),
               "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel)}
    if family not in classes or layout not in ("base", "large"):
        raise ValueError(f"unknown family/layout {family}/{layout}: families {sorted(classes)}, "
                         "layouts base, large")
    config_class, model_class = classes[family]
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0,
                  activation_dropout=0.0, feat_proj_dropout=0.0,
                  layerdrop=0.1)  # as the released checkpoints: LayerDrop on in training
    if family == "wavlm":
        kwargs.update(num_buckets=16, max_bucket_distance=32)
    if family == "data2vec-audio":
        kwargs.update(conv_pos_kernel_size=5, num_conv_pos_embeddings=2)
    if layout == "large":
        kwargs.update(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(config_class(**kwargs))
