"""What is costed is what is shipped: the inference folder of a run is written from the one
``Deployment`` whose cost the recipe measures, for every strategy that changes the forward
(input downsampling, token dropping, early exit, token merging, adaptive skip) and for those
that change the backbone (masks, adapters, LoRA).

For each, on a tiny random wav2vec2: the shipped CTC model (``Deployment.ctc_model``) gives the
log-probabilities of the deployment's own decoding path (``fp32_decoding``, the path its int8
error rates are measured on) where that path decodes as the run does, and the folder written
from it, loaded by SpeechBrain's ``EncoderASR`` through its ``hyperparams.yaml`` alone, gives
the same log-probabilities again.
"""

import pytest
import torch
from speechbrain.inference.ASR import EncoderASR
from torch import nn

from conftest import write_tiny_model
from s3brain.backbone.wrapper import load_ssl
from s3brain.deployment.export import write_ctc_folder
from s3brain.deployment.model import Deployment
from s3brain.strategies import (Adapters, AdaptiveSkip, Downsampling, EarlyExit, LoRA, Masks,
                                Strategy, TokenDropping, TokenMerging)
from s3brain.strategies.base import ExportError, setup_strategies
from s3brain.strategies.downsampling import InputDownsampling
from s3brain.strategies.early_exit import ExitHeads
from s3brain.strategies.token_dropping import SaladDetector

ALPHABET = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"
OUTPUTS = len(ALPHABET) + 1


def _strategies(name, hidden):
    """The strategies of one case, before setup."""
    torch.manual_seed(0)
    if name == "downsampling":
        return [Downsampling(InputDownsampling("conv", factor=2, upsample=True))]
    if name == "uniform_dropping":
        return [TokenDropping("uniform", drop_share=0.4)]
    if name == "salad":
        return [TokenDropping("salad", skip_ratio=0.5, detector=SaladDetector(16, channels=8,
                                                                               layers=2))]
    if name == "early_exit":
        return [EarlyExit(ExitHeads(hidden, OUTPUTS, layers=1), training="joint",
                          threshold=5.0)]
    if name == "token_merging":
        return [TokenMerging(merge_ratio=0.5, merge_after=[0])]
    if name == "adaptive_skip":
        return [AdaptiveSkip(skip_ratio=0.5, skip_after=[0])]
    if name == "masks":
        return [Masks(sparsity=0.3, scope="both")]
    if name == "adapters":
        return [Adapters(bottleneck=4)]
    return [LoRA(rank=2, targets=["attention"])]


CASES = ["downsampling", "uniform_dropping", "salad", "early_exit", "token_merging",
         "adaptive_skip", "masks", "adapters", "lora"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "w2v2", "wav2vec2", "base")


def _wav(samples, seed):
    return torch.randn(1, samples, generator=torch.Generator().manual_seed(seed)) * 0.1


@pytest.mark.parametrize("name", CASES)
def test_the_shipped_model_is_the_costed_one(name, tiny, tmp_path):
    ssl = load_ssl(str(tiny), str(tmp_path / "save")).eval()
    hidden = ssl.model.config.hidden_size
    strategies = _strategies(name, hidden)
    setup_strategies(strategies, ssl, {"seed": 0, "model": nn.Identity(),
                                       "strategies": strategies})
    for strategy in strategies:
        if isinstance(strategy, TokenDropping):
            strategy.deployed_kept_share = 0.6  # as a test pass would have measured it
        for module in strategy.modules().values():  # trained modules: not their init
            for p in module.parameters():
                torch.nn.init.normal_(p, std=0.3)
    extra = [m for s in strategies for m in s.modules().values()]
    # as the recipes give it: Sequential(head, ctc_lin)
    head = nn.Sequential(nn.Sequential(nn.Linear(hidden, 16), nn.LeakyReLU()), nn.Linear(16, OUTPUTS))
    deployment = Deployment(ssl, head, strategies, extra=extra)
    shipped = deployment.ctc_model(blank_index=0)
    wav = _wav(24000, seed=1)
    with torch.no_grad():
        log_probs = shipped(wav)
        if deployment.not_decodable is None:
            decoded = deployment.fp32_decoding(wav).log_softmax(-1)
            torch.testing.assert_close(log_probs, decoded, rtol=0, atol=1e-5)
    # the shipped modules are the deployment's own, not copies made for the export
    assert shipped.head is deployment.head[0] and shipped.ctc_lin is deployment.head[1]
    if shipped.encode is not None:
        ours = {id(p) for p in shipped.encode.parameters()}
        assert ours <= {id(p) for m in deployment.extra for p in m.parameters()}
    folder = write_ctc_folder(deployment, {"blank_index": 0, "alphabet": ALPHABET,
                                           "strategy": name}, tmp_path / "run")
    asr = EncoderASR.from_hparams(source=str(folder), savedir=str(tmp_path / "asr"))
    with torch.no_grad():
        loaded = asr.encode_batch(wav, torch.ones(1))
    torch.testing.assert_close(loaded, log_probs, rtol=0, atol=1e-5)


def test_a_strategy_that_changes_the_forward_without_saying_how_is_refused(tiny, tmp_path):
    class Reversed(Strategy):
        """Changes the forward but has no export."""

        changes_forward = True

        def encode(self, ssl, wavs, wav_lens, stage):
            return ssl(wavs.flip(-1), wav_lens), wav_lens

    ssl = load_ssl(str(tiny), str(tmp_path / "save")).eval()
    head = nn.Sequential(nn.Identity(), nn.Linear(ssl.model.config.hidden_size, OUTPUTS))
    deployment = Deployment(ssl, head, [Reversed()])
    with pytest.raises(ExportError, match="Reversed changes the backbone's forward"):
        deployment.ctc_model()


def test_random_dropping_is_refused_in_one_line():
    with pytest.raises(ExportError, match="random token dropping"):
        TokenDropping("random", drop_share=0.5).export(None)


def test_a_backbone_trained_with_time_masking_off_ships(tiny, tmp_path):
    """config_overrides turn the masking off after the model was built, so it still holds the
    mask embedding its exported config no longer builds: the shipped model must load without it."""
    ssl = load_ssl(str(tiny), str(tmp_path / "save"),
                   config_overrides={"mask_time_prob": 0.0, "mask_feature_prob": 0.0}).eval()
    assert "masked_spec_embed" in ssl.model.state_dict()
    head = nn.Sequential(nn.Identity(), nn.Linear(ssl.model.config.hidden_size, OUTPUTS))
    deployment = Deployment(ssl, head, [])
    shipped = deployment.ctc_model()
    assert "masked_spec_embed" not in shipped.backbone.model.state_dict()
    wav = _wav(16000, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(shipped(wav), deployment.fp32_decoding(wav).log_softmax(-1),
                                   rtol=0, atol=1e-5)
