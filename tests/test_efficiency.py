"""Peak memory and ONNX timing of the cost report, on known answers."""

import pytest
import torch

from s3brain.efficiency import onnx_latency_ms, peak_memory_mb


def test_peak_memory_counts_live_tensors_only():
    def forward():
        a = torch.zeros(1024, 1024)  # 4 MiB
        b = torch.zeros(1024, 1024)  # 4 MiB
        del a
        c = torch.zeros(2048, 1024)  # 8 MiB: at most b and c are alive together
        return b, c

    assert peak_memory_mb(forward) == pytest.approx(12.0, abs=0.1)


def test_onnx_export_matches_torch_and_times_it():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(1, 8, 10, stride=5)
    linear = torch.nn.Linear(8, 3)

    def forward(wav):
        return linear(conv(wav.unsqueeze(1)).transpose(1, 2))

    ms, difference = onnx_latency_ms(forward, [conv, linear], torch.randn(1, 16000), repeats=3)
    assert ms > 0 and difference < 1e-5
