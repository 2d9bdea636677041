"""Cost of a model, measured the same way for every strategy.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over a real forward pass; latency is
the median wall time of repeated forward passes on the CPU with a fixed number of threads.

Example
-------
>>> import torch
>>> layer = torch.nn.Linear(16000, 10)
>>> report = measure_cost(layer, seconds=1, repeats=3)
>>> report["flops_1s"] == 2 * 16000 * 10
True
>>> count_parameters(layer)
160010
"""

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module, trainable_only=False):
    """Number of parameters of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(forward, *inputs):
    """FLOPs of one call ``forward(*inputs)`` (a multiply-add counts as 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(*inputs)
    return int(counter.get_total_flops())


def median_latency_ms(forward, *inputs, repeats=5, warmup=1, threads=1):
    """Median wall time in ms of ``forward(*inputs)`` with ``threads`` intra-op threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        with torch.no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                forward(*inputs)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 1000 * statistics.median(times)


def peak_memory_mb(forward, *inputs):
    """Peak CPU memory (MiB) that one call allocates on top of what exists before it, from the
    allocations and frees torch's profiler records, in order."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward(*inputs)
    running = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / 2**20


class _Traced(torch.nn.Module):
    """A forward function with the modules it uses, as one module to export."""

    def __init__(self, forward, modules):
        super().__init__()
        self.modules_used = torch.nn.ModuleList(modules)
        self.fn = forward

    def forward(self, wav):
        return self.fn(wav)


def onnx_latency_ms(forward, modules, wav, repeats=5, threads=1):
    """Export ``forward`` (which uses ``modules``) to ONNX and return the median onnxruntime CPU
    latency in ms on ``wav``, and the largest difference from the torch output."""
    import tempfile

    import onnxruntime

    module = _Traced(forward, modules).eval()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = f"{tmp}/model.onnx"
        torch.onnx.export(module, (wav,), path, input_names=["wav"], output_names=["out"],
                          dynamic_axes={"wav": {1: "samples"}}, dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {"wav": wav.numpy()}
        out = session.run(None, feed)[0]
        difference = float((torch.from_numpy(out) - module(wav)).abs().max())
        times = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            session.run(None, feed)
            if i:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), difference


def measure_cost(forward, seconds=10, sample_rate=16000, repeats=5, threads=1):
    """FLOPs, CPU latency and real-time factor of ``forward`` on ``seconds`` of audio.

    Returns
    -------
    dict
        ``flops_<s>s``, ``latency_ms_<s>s``, ``rtf`` and ``latency_threads``.
    """
    generator = torch.Generator().manual_seed(0)
    wav = torch.randn(1, int(seconds * sample_rate), generator=generator) * 0.1
    module = forward if isinstance(forward, torch.nn.Module) else None
    was_training = module.training if module is not None else None
    if module is not None:
        module.eval()
    try:
        flops = count_flops(forward, wav)
        latency = median_latency_ms(forward, wav, repeats=repeats, threads=threads)
    finally:
        if module is not None:
            module.train(was_training)
    tag = f"{seconds:g}s"
    return {f"flops_{tag}": flops, f"latency_ms_{tag}": round(latency, 2),
            "rtf": round(latency / 1000 / seconds, 5), "latency_threads": threads}
