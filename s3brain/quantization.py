"""Dynamic int8 quantization of a deployable model's linear layers, for CPU inference.

The weights of every linear (ONNX ``MatMul``/``Gemm``) layer are stored as int8 and the
activations quantized on the fly, batch by batch; the CNN feature extractor stays in float.
Two backends do it:

- ``onnxruntime``: the model exported to ONNX (``s3brain.efficiency.export_onnx``) and quantized
  by ``onnxruntime.quantization.quantize_dynamic``; what a CPU deployment serves.
- ``torch``: ``torch.ao.quantization.quantize_dynamic`` on a copy of the modules. torch 2.13 marks
  this eager API deprecated (its successor is torchao); it is kept to measure against.

``benchmarks/int8_backends.py`` measures both against fp32, side by side.

Example
-------
>>> import tempfile, torch
>>> model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
>>> wav = torch.randn(2, 64)
>>> with tempfile.TemporaryDirectory() as tmp:
...     int8 = OnnxInt8.export(lambda x: model(x), [model], wav, tmp)
...     out = int8(wav)
>>> out.shape, bool((out - model(wav)).abs().max() < 0.05)
(torch.Size([2, 8]), True)
"""

import copy
import logging
import warnings
from pathlib import Path

import torch

BACKENDS = ("onnxruntime", "torch")


def quantize_onnx_int8(source, target, per_channel=True):
    """Write ``target``: the ONNX model ``source`` with int8 weights in its linear layers.

    Arguments
    ---------
    source, target : str or Path
        The float ONNX file and the quantized one to write.
    per_channel : bool
        One weight scale per output channel (the default) instead of one per layer: as fast,
        and closer to fp32 (on a fine-tuned w2v2-tiny, 67.5% of the test-clean greedy
        transcripts equal fp32's instead of 60%, WER +0.06 instead of +0.17).

    Returns
    -------
    Path
        ``target``.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's own pre-processing (shape inference, graph optimisation) first, as its
    # quantizer asks: it finds more layers to quantize in the optimised graph.
    prepared = Path(target).with_suffix(".prepared.onnx")
    # its quantizer logs a line per tensor it leaves in float on the root logger: not a run's news
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], per_channel=per_channel)
    finally:
        logging.disable(previous)
    prepared.unlink()
    return Path(target)


class OnnxInt8:
    """A float ONNX model quantized to int8 and served by onnxruntime on the CPU; ``export``
    makes one from a deployable forward.

    Arguments
    ---------
    float_model : str or Path
        The float ONNX file (input ``wav``, see ``s3brain.efficiency.export_onnx``); the int8
        one is written beside it (``model.onnx`` -> ``model.int8.onnx``).
    threads : int
        onnxruntime intra-op threads.
    per_channel : bool
        Per-channel weight scales (``quantize_onnx_int8``).

    Example
    -------
    >>> import tempfile
    >>> from s3brain.efficiency import export_onnx
    >>> layer = torch.nn.Linear(32, 4)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = export_onnx(layer, [layer], torch.randn(1, 32), f"{tmp}/model.onnx")
    ...     int8 = OnnxInt8(f"{tmp}/model.onnx")
    ...     name = int8.path.name
    >>> name, int8(torch.randn(1, 32)).shape
    ('model.int8.onnx', torch.Size([1, 4]))
    """

    backend = "onnxruntime"

    def __init__(self, float_model, threads=1, per_channel=True):
        self.path = quantize_onnx_int8(float_model, Path(float_model).with_suffix(".int8.onnx"),
                                       per_channel)
        # kept in memory, so the files may be deleted and the session remade with other threads
        self.model = self.path.read_bytes()
        self.session = self.threads = None
        self.set_threads(threads)

    def set_threads(self, threads):
        """Serve with ``threads`` intra-op threads (a new onnxruntime session, if they differ).

        Arguments
        ---------
        threads : int
            Intra-op threads (one inter-op thread, as ``s3brain.efficiency.onnx_session``).
        """
        import onnxruntime

        if threads == self.threads:
            return
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = onnxruntime.InferenceSession(self.model, options,
                                                    providers=["CPUExecutionProvider"])
        self.threads = threads

    @classmethod
    def export(cls, forward, modules, example, folder, threads=1):
        """Export ``forward`` to ``folder/model.onnx`` and quantize it.

        Arguments
        ---------
        forward : callable
            ``wav [batch, samples] -> outputs``, as deployed (``s3brain.report.Deployment``).
        modules : list of torch.nn.Module
            The modules ``forward`` uses.
        example : torch.Tensor
            An example waveform for the export (any length works afterwards).
        folder : str or Path
            Where the float and int8 ONNX files are written.
        threads : int
            onnxruntime intra-op threads.

        Returns
        -------
        OnnxInt8
            The int8 model.

        Example
        -------
        >>> import tempfile
        >>> layer = torch.nn.Linear(32, 4)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = OnnxInt8.export(layer, [layer], torch.randn(1, 32), tmp)(torch.ones(1, 32))
        >>> out.shape
        torch.Size([1, 4])
        """
        from s3brain.efficiency import export_onnx

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        export_onnx(forward, modules, example, folder / "model.onnx")
        return cls(folder / "model.onnx", threads)

    def __call__(self, wav):
        """Outputs of the int8 model for ``wav`` (a CPU tensor), as a tensor."""
        return torch.from_numpy(self.session.run(None, {"wav": wav.cpu().numpy()})[0])


def torch_int8(modules):
    """Copies of ``modules`` with their ``nn.Linear`` layers dynamically quantized to int8
    (torch's eager API, kept to compare backends; its deprecation warning is silenced here).

    Arguments
    ---------
    modules : list of torch.nn.Module
        The deployable modules, on the CPU.

    Returns
    -------
    list of torch.nn.Module
        The quantized copies, in eval mode, in the same order.

    Example
    -------
    >>> layer = torch.nn.Sequential(torch.nn.Linear(16, 4))
    >>> (quantized,) = torch_int8([layer])
    >>> type(quantized[0]).__name__
    'Linear'
    >>> quantized[0].__module__
    'torch.ao.nn.quantized.dynamic.modules.linear'
    """
    copies = copy.deepcopy(list(modules))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager API's deprecation notes, see the module doc
        return [torch.ao.quantization.quantize_dynamic(m.eval(), {torch.nn.Linear},
                                                       dtype=torch.qint8) for m in copies]


def frame_agreement(reference, other):
    """Share of frames whose arg-max output is the same in ``reference`` and ``other``
    (``[..., classes]`` logits): how often an int8 model's greedy CTC path agrees with fp32's.

    Arguments
    ---------
    reference, other : torch.Tensor
        Logits of the same input.

    Returns
    -------
    float
        Between 0 and 1.

    Example
    -------
    >>> frame_agreement(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([[0.0, 3.0], [0.0, 1.0]]))
    0.5
    """
    return float((reference.argmax(-1) == other.argmax(-1)).float().mean())
