"""wav2vec 2.0 pretraining pieces on top of transformers' ``Wav2Vec2ForPreTraining``.

The recipe (``recipes/LibriSpeech/pretrain/train.py``) draws the masked time steps and the
negatives for each batch here, normalises the audio the way ``Wav2Vec2FeatureExtractor`` does, and
exports the trained encoder as a plain HF model folder that ``AutoModel.from_pretrained`` reads.

Why not SpeechBrain's own wav2vec 2.0 pretraining (``speechbrain.lobes.models.wav2vec``:
``W2VLatentExtractor``, ``w2v_mask``, ``sample_negatives``): it trains SpeechBrain's own encoder,
whose checkpoint transformers cannot load, and the point of this recipe is a backbone in the
Hugging Face format every recipe (and every user) loads like ``facebook/wav2vec2-base``. So the
masking and the negatives are transformers' (``_compute_mask_indices``,
``_sample_negative_indices``), matched to the model they train.

Example
-------
>>> import torch
>>> from s3brain.backbone import default_backbone
>>> model = new_pretraining_model(default_backbone())
>>> wavs, lens = torch.randn(2, 32000), torch.tensor([1.0, 0.75])
>>> out, masked = pretraining_step(model, wavs, lens, mask_prob=0.5, mask_length=5)
>>> bool(out.loss > 0) and masked > 0
True
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from speechbrain.dataio.dataio import length_to_mask
from transformers import AutoConfig, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    _compute_mask_indices,
    _sample_negative_indices,
)

from s3brain.utils.efficiency import flop_counter


def new_pretraining_model(config_dir, **config_overrides):
    """A randomly initialised ``Wav2Vec2ForPreTraining`` with the configuration in ``config_dir``."""
    config = AutoConfig.from_pretrained(config_dir, **config_overrides)
    return Wav2Vec2ForPreTraining(config)


def normalize_audio(wavs, lengths):
    """Zero mean, unit variance per utterance over its real samples; padding stays zero."""
    mask = length_to_mask(lengths, wavs.shape[1], dtype=wavs.dtype, device=wavs.device)
    count = mask.sum(1, keepdim=True).clamp(min=1)
    mean = (wavs * mask).sum(1, keepdim=True) / count
    var = (((wavs - mean) * mask) ** 2).sum(1, keepdim=True) / count
    return (wavs - mean) / torch.sqrt(var + 1e-7) * mask


def pretraining_step(model, wavs, rel_lens, mask_prob, mask_length, num_negatives=None):
    """Forward pass with freshly drawn masks and negatives.

    Returns the model output (``loss`` summed over masked frames, ``contrastive_loss``,
    ``diversity_loss``, ``codevector_perplexity``) and the number of masked frames.
    """
    batch, samples = wavs.shape
    lengths = torch.round(rel_lens * samples).long()
    attention_mask = length_to_mask(lengths, samples, dtype=torch.long, device=wavs.device)
    wavs = normalize_audio(wavs, lengths)
    frames = int(model._get_feat_extract_output_lengths(samples))
    frame_mask = model._get_feature_vector_attention_mask(frames, attention_mask)
    mask = _compute_mask_indices((batch, frames), mask_prob, mask_length,
                                 attention_mask=frame_mask, min_masks=2)
    negatives = _sample_negative_indices((batch, frames),
                                         num_negatives or model.config.num_negatives,
                                         mask_time_indices=mask)
    out = model(wavs, attention_mask=attention_mask,
                mask_time_indices=torch.as_tensor(mask, device=wavs.device),
                sampled_negative_indices=torch.as_tensor(negatives, device=wavs.device))
    return out, int(np.sum(mask))


def step_flops(config_dir, batch_size, seconds, sample_rate=16000, mask_prob=0.5, mask_length=5):
    """FLOPs of one pretraining optimizer step, forward and backward, on ``batch_size`` crops of
    ``seconds`` each (the recipe's ``batch_size`` and ``crop_seconds``): the pretraining compute
    per step, so that backbones can be compared by what their pretraining cost.

    Counted as ``s3brain.utils.efficiency.count_flops`` counts (matrix products, convolutions,
    attention; a multiply-add is 2), in training mode. Not counted: elementwise work, including
    the quantizer's weighted sum of codevectors and the cosine similarities of the contrastive
    loss, which transformers compute elementwise; the optimizer's update.

    Example
    -------
    >>> from s3brain.backbone import default_backbone
    >>> one = step_flops(default_backbone(), 1, 1.0)
    >>> step_flops(default_backbone(), 2, 1.0) == 2 * one
    True
    """

    model = new_pretraining_model(config_dir).train()
    wavs = torch.randn(batch_size, int(round(seconds * sample_rate)))
    with flop_counter() as counter:
        out, _ = pretraining_step(model, wavs, torch.ones(batch_size), mask_prob, mask_length)
        out.loss.backward()
    return int(counter.get_total_flops())


def export_backbone(model, config_dir, out_dir, card=None):
    """Write the encoder as a HF model folder (config, safetensors, preprocessor config)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.wav2vec2.save_pretrained(out_dir)
    source = Path(config_dir) / "preprocessor_config.json"
    if source.exists() and source.resolve() != (out_dir / source.name).resolve():
        shutil.copy(source, out_dir / source.name)
    if card:
        (out_dir / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    return out_dir
