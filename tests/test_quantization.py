"""int8 deployment: on real audio through the shipped pretrained backbone, the int8 model's
outputs stay close to fp32's and its greedy CTC path agrees on almost every frame."""

import pytest
import torch

from s3brain.audio import read_audio
from s3brain.backbone import default_backbone, load_ssl
from s3brain.quantization import OnnxInt8, frame_agreement, torch_int8


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    ssl = load_ssl(default_backbone(), tmp_path_factory.mktemp("ssl")).eval()
    torch.manual_seed(0)
    head = torch.nn.Linear(ssl.model.config.hidden_size, 29).eval()  # a character CTC head
    return ssl.model, head


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_int8_is_close_to_fp32_on_real_speech(deployed, backend, tiny_corpus, tmp_path):
    hf, head = deployed
    files = sorted((tiny_corpus / "LibriSpeech" / "test-clean").rglob("*.flac"))[:4]
    assert len(files) == 4

    def forward(wav):
        return head(hf(wav).last_hidden_state)

    with torch.no_grad():
        if backend == "onnxruntime":
            int8 = OnnxInt8.export(forward, [hf, head], read_audio(files[0])[None], tmp_path)
            assert (tmp_path / "model.int8.onnx").stat().st_size < 0.5 * (
                tmp_path / "model.onnx").stat().st_size  # int8 weights: a smaller file
        else:
            q_hf, q_head = torch_int8([hf, head])

            def int8(wav):
                return q_head(q_hf(wav).last_hidden_state)
        for path in files:
            wav = read_audio(path)[None]
            reference, quantized = forward(wav), int8(wav)
            assert quantized.shape == reference.shape
            relative = float((quantized - reference).abs().max() / reference.std())
            assert relative < 0.2, (path.name, relative)
            assert frame_agreement(reference, quantized) >= 0.9, path.name
        # the quantized copies leave the fp32 model as it was
        assert forward(wav).shape == reference.shape and torch.equal(forward(wav), reference)
