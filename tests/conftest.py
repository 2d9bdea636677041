"""Shared fixtures: the tiny synthetic corpus and helpers to run the recipe."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech"
sys.path.insert(0, str(RECIPE))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# pytest-xdist runs one worker per core (setup.cfg: -n auto): give each worker, and the recipe
# runs it starts, its share of the cores, not all of them, or the workers slow each other down.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_corpus():
    """The tiny synthetic corpus (generated once, cached like the default one)."""
    from s3brain.data.synthetic import generate

    return generate(size="tiny", progress=False)


def run_recipe(*args, cwd=REPO, env=None, timeout=600, launcher=None, script=RECIPE / "train.py"):
    """Run a recipe script (LibriSpeech ``train.py`` by default); return the CompletedProcess."""
    cmd = (launcher or [sys.executable]) + [str(script), *map(str, args)]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


#: (family, layout) of every tiny model ``tiny_family_models`` writes. data2vec-audio has a single
#: transformers layout (layer-norm CNN, post-LN transformer): it is listed once, as "base".
FAMILY_LAYOUTS = [("wav2vec2", "base"), ("wav2vec2", "large"), ("hubert", "base"),
                  ("hubert", "large"), ("wavlm", "base"), ("wavlm", "large"),
                  ("data2vec-audio", "base")]


def write_tiny_model(folder, family, layout, seed=0):
    """A tiny random-init model of ``family`` in ``layout`` written as a downloaded hub folder is
    (``save_pretrained``: config.json, model.safetensors, preprocessor_config.json).

    The CNN keeps the standard 7 layers and 320x stride (so frame counts are those of real
    checkpoints) with 16 channels; the transformer has 2 blocks of width 32 and 4 heads."""
    import torch
    from transformers import (Data2VecAudioConfig, Data2VecAudioModel, HubertConfig, HubertModel,
                              Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model,
                              WavLMConfig, WavLMModel)

    classes = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel),
               "wavlm": (WavLMConfig, WavLMModel),
               "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel)}
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
    if layout == "large":  # as wav2vec2-large-lv60 / hubert-large-ll60k / wavlm-large
        kwargs.update(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_class(config_class(**kwargs))
    model.save_pretrained(folder)
    # do_normalize as the large checkpoints' preprocessor (the base ones say False)
    Wav2Vec2FeatureExtractor(do_normalize=layout == "large", return_attention_mask=True) \
        .save_pretrained(folder)
    return Path(folder)


@pytest.fixture(scope="session")
def tiny_family_models(tmp_path_factory):
    """``{(family, layout): folder}`` of tiny random-init models of every family and layout."""
    root = tmp_path_factory.mktemp("families")
    return {(family, layout): write_tiny_model(root / f"{family}-{layout}", family, layout)
            for family, layout in FAMILY_LAYOUTS}
