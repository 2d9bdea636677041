"""Cost of a model, measured the same way for every strategy.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over a real forward pass, with a
formula added for the CPU kernel of ``scaled_dot_product_attention`` (torch has none, so the
attention products of wav2vec2, HuBERT and data2vec-audio were not counted before) and one for
the backward of a grouped convolution (torch's overcounts it, which matters when training compute
is counted: ``s3brain.training.pretraining.step_flops``); latency is
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
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def count_parameters(module, trainable_only=False):
    """Number of parameters of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def attention_products_flops(query_shape, key_shape, value_shape):
    """FLOPs of the two products of attention, ``Q K^T`` and ``softmax(.) V``.

    Parameters
    ----------
    query_shape, key_shape, value_shape : sequence of int
        ``(..., T_q, d)``, ``(..., T_k, d)`` and ``(..., T_k, d_v)``; the leading dimensions are
        those of the query (batch and heads; fewer key/value heads are broadcast to them).

    Returns
    -------
    int
        ``2 N T_q T_k d + 2 N T_q T_k d_v`` with ``N`` the product of the leading dimensions.

    Example
    -------
    >>> attention_products_flops((1, 6, 500, 32), (1, 6, 500, 32), (1, 6, 500, 32))
    192000000
    """
    *leading, t_q, d = query_shape
    t_k, d_v = value_shape[-2], value_shape[-1]
    n = 1
    for size in leading:
        n *= size
    return 2 * n * t_q * t_k * d + 2 * n * t_q * t_k * d_v


def _cpu_flash_attention_flops(query, key, value, *args, out_shape=None, **kwargs):
    return attention_products_flops(query, key, value)


def _cpu_flash_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None,
                                        **kwargs):
    # Gradients of both products (dQ, dK from the scores, dP, dV): twice the forward products,
    # torch's convention for its other attention kernels' backward.
    return 2 * attention_products_flops(query, key, value)


# What torch's flop counter lacks on the CPU: with the default ``attn_implementation="sdpa"`` of
# transformers, wav2vec2/HuBERT/data2vec-audio attention runs as this one kernel in eval mode,
# with or without a padding mask (the math fallback, used with dropout in training, decomposes
# into ``bmm`` and is counted already; WavLM's own attention is ``baddbmm``/``bmm``).
ATTENTION_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        _cpu_flash_attention_backward_flops,
}


def _convolution_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding,
                                _dilation, transposed, _output_padding, _groups, output_mask,
                                out_shape=None, **kwargs):
    # Each gradient asked for (of the input, of the weight) multiplies the same pairs of numbers
    # as the forward convolution, once each.
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape),
                              transposed=transposed)
    return forward * (bool(output_mask[0]) + bool(output_mask[1]))


#: torch's formula for the backward of a convolution (2.13) counts the weight's gradient as if
#: the convolution had one group: ``groups`` times too much, 16 times for wav2vec2's positional
#: convolution (its whole backward then counts 8.5 times what it should). Replaced here by the
#: forward count once per gradient asked for, exact for grouped, strided and transposed
#: convolutions alike.
BACKWARD_FLOP_FORMULAS = {torch.ops.aten.convolution_backward: _convolution_backward_flops}


def flop_counter():
    """A silent ``FlopCounterMode`` that also counts the CPU attention kernel and counts the
    backward of grouped convolutions right; the formulas are given to this counter only, so
    torch's global registry is left as it is."""
    return FlopCounterMode(display=False,
                           custom_mapping={**ATTENTION_FLOP_FORMULAS, **BACKWARD_FLOP_FORMULAS})


def count_flops(forward, *inputs):
    """FLOPs of one call ``forward(*inputs)`` (a multiply-add counts as 2), attention included.

    Counted: matrix products, convolutions and the two attention products; not counted:
    elementwise operations, normalisations and softmax (as in torch's flop counter).

    Example
    -------
    >>> q = torch.zeros(1, 2, 10, 4)
    >>> count_flops(torch.nn.functional.scaled_dot_product_attention, q, q, q)
    3200
    """
    with torch.no_grad(), flop_counter() as counter:
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
    """A forward function with the modules it uses, as one module to export.

    Arguments
    ---------
    forward : callable
        Waveform batch -> output tensor.
    modules : list of torch.nn.Module
        The modules ``forward`` calls, registered so the exporter sees their parameters.
    """

    def __init__(self, forward, modules):
        super().__init__()
        self.modules_used = torch.nn.ModuleList(modules)
        self.fn = forward

    def forward(self, wav):
        """Run the wrapped forward function.

        Arguments
        ---------
        wav : torch.Tensor
            Waveform batch, ``[batch, samples]``.

        Returns
        -------
        output : torch.Tensor
            What the wrapped function returns.
        """
        return self.fn(wav)


def export_onnx(forward, modules, wav, path):
    """Export ``forward`` (a function of a waveform ``[batch, samples]`` that uses ``modules``)
    to an ONNX file whose input ``wav`` may have any number of samples.

    Arguments
    ---------
    forward : callable
        The deployed forward pass.
    modules : list of torch.nn.Module
        The modules it uses (so their parameters are exported).
    wav : torch.Tensor
        An example input.
    path : str or Path
        The ONNX file to write.

    Returns
    -------
    torch.nn.Module
        The exported module (``forward`` with ``modules``), in eval mode.
    """
    module = _Traced(forward, modules).eval()
    # The TorchScript exporter, chosen: it exports w2v2-tiny in 0.7 s where the dynamo one
    # takes 10.8 s (and needs onnxscript), once per recipe run. torch 2.13 still ships it but
    # warns that it is deprecated; that warning says nothing to a recipe's user.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        torch.onnx.export(module, (wav,), str(path), input_names=["wav"], output_names=["out"],
                          dynamic_axes={"wav": {1: "samples"}}, dynamo=False)
    return module


def onnx_session(path, threads=1):
    """An onnxruntime CPU session of the ONNX file ``path`` with ``threads`` intra-op threads.

    Arguments
    ---------
    path : str or Path or bytes
        The ONNX file, or its contents.
    threads : int
        Intra-op threads (one inter-op thread).

    Returns
    -------
    onnxruntime.InferenceSession
        The session.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    model = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnx_latency_ms(forward, modules, wav, repeats=5, threads=1):
    """Export ``forward`` (which uses ``modules``) to ONNX and return the median onnxruntime CPU
    latency in ms on ``wav``, and the largest difference from the torch output."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = f"{tmp}/model.onnx"
        module = export_onnx(forward, modules, wav, path)
        session = onnx_session(path, threads)
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
