"""Static int8 convolutions with some layers kept in float (``quantize_onnx_static_int8``'s
``float_layers``) and its calibration choices: the listed layers have no quantize/dequantize
pair on their inputs or weights and give the float layer's output exactly."""

import warnings

import pytest
import torch

from s3brain.deployment.int8 import SplitInt8, int8_convs, quantize_onnx_static_int8
from s3brain.utils.efficiency import onnx_session


class ThreeConvs(torch.nn.Module):
    """A small CNN feature encoder; returns the first conv layer's output as well (before its
    activation: the activation's output is the next layer's input, quantized there)."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList([torch.nn.Conv1d(1, 8, 10, 5), torch.nn.Conv1d(8, 8, 3, 2),
                                          torch.nn.Conv1d(8, 8, 3, 2)])

    def forward(self, wav):
        first = self.convs[0](wav[:, None])
        hidden = torch.nn.functional.gelu(first)
        for conv in self.convs[1:]:
            hidden = torch.nn.functional.gelu(conv(hidden))
        return first, hidden


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cnn")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ThreeConvs().eval(), (torch.randn(1, 4000),), str(folder / "cnn.onnx"),
                          input_names=["wav"], output_names=["first", "out"],
                          dynamic_axes={"wav": {1: "samples"}}, dynamo=False)
    torch.manual_seed(1)
    calibration = [torch.randn(1, 8000) * 0.3 for _ in range(4)]
    return folder / "cnn.onnx", calibration


def run(path, wav):
    return onnx_session(str(path)).run(None, {"wav": wav.numpy()})


@pytest.mark.parametrize("float_layers", [(), (0,), (1,), (0, 2), (0, 1, 2)])
def test_float_layers_have_no_quantize_dequantize(cnn_onnx, tmp_path, float_layers):
    source, calibration = cnn_onnx
    target = quantize_onnx_static_int8(source, tmp_path / "int8.onnx", calibration, chunk=4000,
                                       float_layers=float_layers)
    assert int8_convs(target) == [i not in float_layers for i in range(3)]


def test_a_float_layer_gives_the_float_output_exactly(cnn_onnx, tmp_path):
    source, calibration = cnn_onnx
    wav = torch.randn(1, 6000) * 0.3
    first, out = run(source, wav)
    kept = quantize_onnx_static_int8(source, tmp_path / "kept.onnx", calibration, chunk=4000,
                                     float_layers=[0])
    kept_first, kept_out = run(kept, wav)
    assert (kept_first == first).all()  # bit for bit
    assert not (kept_out == out).all()  # the other layers are in int8
    whole = quantize_onnx_static_int8(source, tmp_path / "whole.onnx", calibration, chunk=4000)
    assert not (run(whole, wav)[0] == first).all()  # and the first layer too, when not kept
    none = quantize_onnx_static_int8(source, tmp_path / "none.onnx", calibration, chunk=4000,
                                     float_layers=[0, 1, 2])
    assert all((a == b).all() for a, b in zip(run(none, wav), (first, out)))


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_calibration_methods_and_percentiles_set_other_ranges(cnn_onnx, tmp_path, method):
    source, calibration = cnn_onnx
    wav = torch.randn(1, 6000) * 0.3
    outputs = [run(quantize_onnx_static_int8(source, tmp_path / f"{p}.onnx", calibration,
                                             chunk=4000, method=method, percentile=p), wav)[1]
               for p in (90.0, 99.99)]
    same = bool((outputs[0] == outputs[1]).all())
    assert same == (method != "percentile")  # the percentile only matters to its own method


def test_bad_options_say_what_to_do(cnn_onnx, tmp_path):
    source, calibration = cnn_onnx
    with pytest.raises(ValueError, match="3 Conv nodes"):
        quantize_onnx_static_int8(source, tmp_path / "x.onnx", calibration, chunk=4000,
                                  float_layers=[3])
    with pytest.raises(ValueError, match="use one of"):
        quantize_onnx_static_int8(source, tmp_path / "x.onnx", calibration, chunk=4000,
                                  method="mse")


def test_split_int8_with_static_cnn_keeps_the_listed_layers_float(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=(8, 8, 8), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
        num_feat_extract_layers=3)).eval()
    calibration = [torch.randn(1, 32000) * 0.3 for _ in range(2)]
    split = SplitInt8.export(model, None, calibration[0], tmp_path)
    assert not split.cnn_int8
    static = split.with_static_cnn(calibration, float_layers=[0, 2])
    assert static.cnn_int8 and static.encoder is split.encoder
    assert int8_convs(static.cnn_model) == [False, True, False]
    assert int8_convs(split.cnn_model) == [False, False, False]
    assert static(calibration[1]).shape == split(calibration[1]).shape
    back = static.with_static_cnn(None)
    assert torch.equal(back(calibration[1]), split(calibration[1]))
