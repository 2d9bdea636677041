"""int8 deployment as every run reports it: the int8 error rates scored as by hand, the skips,
the torch fallback (the recipe's results carrying the int8 keys beside fp32's:
tests/integration/test_librispeech_recipe.py); ``results.json`` of a run tested again on a
split of another name (``s3brain.training.reporting.write_results``)."""

import tempfile
from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch

from s3brain.backbone.wrapper import default_backbone, load_ssl
from s3brain.deployment.int8 import SplitInt8, frame_agreement, int8_convs
from s3brain.deployment.model import Deployment, deployment_cost, int8_error_rates
from s3brain.training.reporting import metric_key, split_results, write_results

ALPHABET = " ABCD"  # label i + 1; blank 0


def encoder():
    """A character CTC label encoder: blank, space, A to D."""
    enc = sb.dataio.encoder.CTCTextEncoder()
    enc.insert_blank(index=0)
    enc.update_from_iterable(list(ALPHABET), sequence_input=False)
    return enc


def logits_of(text):
    """One-hot logits ``[1, frames, labels]`` whose greedy CTC path reads ``text`` (a blank
    between characters)."""
    path = [0]
    for char in text:
        path += [ALPHABET.index(char) + 1, 0]
    return torch.nn.functional.one_hot(torch.tensor(path), len(ALPHABET) + 1).float()[None] * 5


def scripted(transcripts):
    """A model that answers the next utterance's ``transcripts`` entry, whatever the audio."""
    answers = iter(transcripts)

    def model(wav):
        return logits_of(next(answers))

    model.backend = "onnxruntime"
    return model


def test_int8_error_rates_against_a_hand_computation():
    utterances = [{"id": "u1", "sig": torch.zeros(800), "wrd": "AB CD"},
                  {"id": "u2", "sig": torch.zeros(800), "wrd": "A"}]
    fp32 = scripted(["AB CD", "A"])
    int8 = scripted(["AB CA", "A"])  # one character wrong in one word of u1
    deployment = SimpleNamespace(decoders=lambda: (fp32, int8), not_decodable=None)
    out = int8_error_rates(deployment, utterances, "test-clean", encoder())
    # words: 1 substitution over 3 reference words; characters with the word boundary
    # (ErrorRateStats' split_tokens): "AB_CD" + "A", 1 substitution over 6
    assert out == {"wer_test_clean_int8": round(100 / 3, 2),
                   "cer_test_clean_int8": round(100 / 6, 2),
                   "int8_same_transcript_test_clean": 0.5}


def test_int8_phoneme_error_rate_and_skips():
    utterances = [{"id": "u1", "sig": torch.zeros(800), "phn": "A B C D"},
                  {"id": "u2", "sig": torch.zeros(800), "phn": "A B"}]
    models = scripted(["ABCD", "AB"]), scripted(["ABD", "AB"])
    deployment = SimpleNamespace(decoders=lambda: models, not_decodable=None)
    out = int8_error_rates(deployment, utterances, "test", encoder(), units="phonemes")
    assert out == {"per_test_int8": round(100 / 6, 2), "int8_same_transcript_test": 0.5}
    # int8_eval: False, or a model that does not decode as deployed: the keys, null
    assert int8_error_rates(deployment, utterances, "test", encoder(), units="phonemes",
                            enabled=False) == dict.fromkeys(out)
    deployment.not_decodable = "early exit decodes each utterance at its own block"
    assert int8_error_rates(deployment, utterances, "test-other", encoder()) == dict.fromkeys(
        ["wer_test_other_int8", "cer_test_other_int8", "int8_same_transcript_test_other"])
    assert int8_error_rates(None, utterances, "test", encoder()) == {}  # off the main process


@pytest.fixture(scope="module")
def ssl():
    with tempfile.TemporaryDirectory() as tmp:
        return load_ssl(default_backbone(), tmp).eval()


def test_cost_side_by_side_and_torch_fallback(ssl):
    torch.manual_seed(0)
    head = torch.nn.Linear(ssl.model.config.hidden_size, 5)
    deployment = Deployment(ssl, head)
    cost = deployment_cost(deployment, seconds=1, repeats=1)
    assert cost["int8_backend"] == "onnxruntime" and deployment.not_decodable is None
    assert cost["latency_ms_1s_int8"] > 0 and cost["onnx_latency_ms_1s"] > 0
    assert cost["rtf_int8"] == pytest.approx(cost["latency_ms_1s_int8"] / 1e3, rel=1e-2)
    # a head on every layer (SUPERB) does not export: torch's int8, its latency still measured
    layers = ssl.model.config.num_hidden_layers + 1

    class WeightedSum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.Parameter(torch.ones(layers) / layers)
            self.out = torch.nn.Linear(ssl.model.config.hidden_size, 5)

        def forward(self, feats):
            return self.out((self.weights[:, None, None, None] * feats).sum(0))

    ssl.output_all_hiddens = True
    try:
        deployment = Deployment(ssl, WeightedSum(), all_layers=True)
        cost = deployment_cost(deployment, seconds=1, repeats=1)
    finally:
        ssl.output_all_hiddens = False
    assert cost["int8_backend"] == "torch" and cost["latency_ms_1s_int8"] > 0
    assert cost["onnx_latency_ms_1s"] is None and deployment.not_decodable


def test_token_dropping_decodes_with_its_dropper(ssl):
    from s3brain.strategies.token_dropping import TokenDropping

    dropping = TokenDropping("uniform", drop_share=0.5)
    dropping.deployed_kept_share = 0.5  # as measured by a test pass
    head = torch.nn.Linear(ssl.model.config.hidden_size, 5)
    wav = torch.randn(1, 32000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        frames = ssl(wav).shape[1]
        # the strategy's own dropper decodes (not the cost's uniform share), the deployment's
        # copy of it: one module with the extra module the run gives
        deployment = Deployment(ssl, head, [dropping], extra=[dropping.dropper])
        assert deployment.not_decodable is None
        assert deployment.dropper is deployment.extra[0] and deployment.dropper is not \
            dropping.dropper
        fp32, int8 = deployment.decoders()
        # its frame choice does not export: CNN and transformer are exported apart
        assert isinstance(int8, SplitInt8) and int8.backend == "onnxruntime"
        assert deployment.int8.keep_fn == deployment.ssl.keep  # the cost's uniform share
        assert int8.keep_fn is deployment.dropper and int8.cnn is deployment.int8.cnn
        kept = fp32(wav).shape
        assert int8(wav).shape == kept and kept[2] == 5 and abs(kept[1] - frames / 2) <= 1
        assert frame_agreement(fp32(wav), int8(wav)) > 0.8
        cost = deployment_cost(deployment, seconds=1, repeats=1)
        assert cost["int8_backend"] == "onnxruntime" and cost["latency_ms_1s_int8"] > 0
        # the CNN in static int8 too, calibrated on other audio
        deployment.calibration = [torch.randn(1, 64000, generator=torch.Generator().manual_seed(1))
                                  * 0.1]
        deployment.int8 = None
        _, int8 = deployment.decoders()
        assert isinstance(int8, SplitInt8) and int8.cnn_int8 and int8.keep_fn is deployment.dropper
        assert int8(wav).shape == kept and frame_agreement(fp32(wav), int8(wav)) > 0.5


def test_int8_cnn_calibration_on_a_plain_backbone(ssl):
    head = torch.nn.Linear(ssl.model.config.hidden_size, 5)
    wav = torch.randn(1, 32000, generator=torch.Generator().manual_seed(0)) * 0.1
    deployment = Deployment(ssl, head)
    deployment.calibration = [torch.randn(1, 64000, generator=torch.Generator().manual_seed(1))
                              * 0.1]
    with torch.no_grad():
        fp32, int8 = deployment.decoders()
        assert isinstance(int8, SplitInt8) and int8.cnn_int8 and int8.keep_fn is None
        reference = fp32(wav)
        assert int8(wav).shape == reference.shape
        assert float((int8(wav) - reference).abs().mean() / reference.std()) < 0.3
    # the first conv layer (raw audio) stays in float by default, the others are int8;
    # static_options={"float_layers": []} puts it in int8 too
    convs = ssl.model.config.num_feat_extract_layers
    assert int8_convs(int8.cnn_model) == [i != 0 for i in range(convs)]
    deployment.static_options = {"float_layers": []}
    deployment.int8 = None
    _, whole = deployment.decoders()
    assert int8_convs(whole.cnn_model) == [True] * convs


def test_a_run_tested_again_on_an_own_split_keeps_the_earlier_splits(tmp_path):
    """The first write lists exactly its metrics; a second one on a split of another name adds
    that split's metrics after them, ranks by it, and keeps the earlier figures."""
    import json

    cost = {"cost_seconds": 10, "params_total": 10, "params_trainable": 10, "flops_10s": 1e9,
            "latency_ms_10s": 5.0, "latency_threads": 1, "rtf": 5e-4, "backbone_bytes": 40,
            "storage_bytes_per_task": 40}
    layer = torch.nn.Linear(2, 2)

    def write(stats, splits):
        metrics = {}
        for split in splits:
            metrics.update(split_results(stats, split))
        return write_results({"strategy": "weight_ft"}, metrics, cost, [], tmp_path, layer,
                             layer, primary=metric_key("wer", splits[0]))

    write({"loss": 1.0, "WER": 80.0, "CER": 50.0}, ["test-clean", "test-other"])
    first = json.loads((tmp_path / "results.json").read_text())
    assert first["metric_keys"] == ["wer_test_clean", "cer_test_clean", "wer_test_other",
                                    "cer_test_other"]
    assert first["primary_metric"] == "wer_test_clean"
    written = write({"WER": 70.0, "CER": 40.0, "WER_LM": 65.0}, ["test-mine"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == written
    assert results["metric_keys"] == first["metric_keys"] + [
        "wer_test_mine", "cer_test_mine", "wer_test_mine_lm"]
    assert results["primary_metric"] == "wer_test_mine"
    assert (results["wer_test_mine"], results["wer_test_mine_lm"]) == (70.0, 65.0)
    assert all(results[k] == first[k] for k in first["metric_keys"])
    with pytest.raises(ValueError, match="primary metric wer_test_clean"):
        write_results({}, {"wer_test_mine": 1.0}, cost, [], tmp_path, layer, layer,
                      primary="wer_test_clean")
