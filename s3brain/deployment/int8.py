"""Dynamic int8 quantization of a deployable model's linear layers, for CPU inference.

The weights of every linear (ONNX ``MatMul``/``Gemm``) layer are stored as int8 and the
activations quantized on the fly, batch by batch; the CNN feature extractor stays in float.
Two backends do it:

- ``onnxruntime``: the model exported to ONNX (``s3brain.utils.efficiency.export_onnx``) and
  quantized by ``onnxruntime.quantization.quantize_dynamic``; what a CPU deployment serves.
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

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from pathlib import Path

import torch

from s3brain.backbone.families import hf_model, run_blocks
from s3brain.backbone.wrapper import normalized_input, output_normalized
from s3brain.utils.efficiency import export_onnx, onnx_session

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
        The float ONNX file (input ``wav``, see ``s3brain.utils.efficiency.export_onnx``); the int8
        one is written beside it (``model.onnx`` -> ``model.int8.onnx``).
    threads : int
        onnxruntime intra-op threads.
    per_channel : bool
        Per-channel weight scales (``quantize_onnx_int8``).

    Example
    -------
    >>> import tempfile
    >>> from s3brain.utils.efficiency import export_onnx
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
            Intra-op threads (one inter-op thread, as ``s3brain.utils.efficiency.onnx_session``).
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
            ``wav [batch, samples] -> outputs``, as deployed
            (``s3brain.deployment.model.Deployment``).
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


CALIBRATION_METHODS = ("percentile", "minmax", "entropy")


def quantize_onnx_static_int8(source, target, calibration, chunk=32000, percentile=99.5,
                              float_layers=(), method="percentile", max_chunks=64):
    """Write ``target``: the ONNX model ``source`` with its convolutions in static int8 (int8
    weights, one scale per output channel; uint8 activations at scales fixed beforehand from
    ``calibration``, onnxruntime's QDQ format). For the CNN feature encoder, which dynamic
    quantization does not speed up (onnxruntime's ``ConvInteger`` ran 2.1x slower than float
    at wav2vec2-base size; static int8 convolutions 2.1x faster,
    ``benchmarks/deployment_ladder.py``).

    The activation ranges are percentiles of the calibration activations' histograms: on a
    fine-tuned w2v2-tiny (100 test-clean utterances, greedy), the CNN in int8 moved the WER
    from 82.82 to 91.41 with minimum-maximum ranges (to 91.41 with entropy ranges), to 87.20 at
    the 99.9th percentile, 86.55 at 99.5 and 85.58 at 99.0 (CER 33.80 -> 35.85 at 99.5, 36.85
    at 99.0); leaving the first convolution in float changed nothing that counts.

    Arguments
    ---------
    source, target : str or Path
        The float ONNX file (input ``wav``) and the quantized one to write.
    calibration : iterable of torch.Tensor
        Inputs like the ones served (for a CNN: real waveforms ``[1, samples]``, a few dozen
        utterances); cut into chunks of ``chunk`` samples (the histograms need one shape),
        remainders dropped.
    chunk : int
        Samples per calibration chunk (at most ``max_chunks`` chunks are used).
    percentile : float
        With ``method="percentile"``: the activation ranges cover this percentile of the
        calibration values.
    float_layers : iterable of int
        Convolutions left in float: their positions among the graph's ``Conv`` nodes in graph
        order (for a CNN feature encoder, the conv layer index, 0 the one on raw audio). No
        QuantizeLinear/DequantizeLinear is put on their inputs or weights.
    method : str
        How the activation ranges are set: ``percentile``, ``minmax`` or ``entropy``.
    max_chunks : int
        At most this many calibration chunks.

    Returns
    -------
    Path
        ``target``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r}: use one of {CALIBRATION_METHODS}")
    convs = [node.name for node in onnx.load(str(source)).graph.node if node.op_type == "Conv"]
    float_layers = sorted(set(float_layers))
    if any(not 0 <= i < len(convs) for i in float_layers):
        raise ValueError(f"float_layers {float_layers}: the graph has {len(convs)} Conv nodes "
                         f"(0 to {len(convs) - 1})")
    chunks = [wav[..., start:start + chunk] for wav in calibration
              for start in range(0, wav.shape[-1] - chunk + 1, chunk)][:max_chunks]
    if not chunks:
        raise ValueError(f"static int8 calibration needs inputs of at least {chunk} samples")

    class Reader(CalibrationDataReader):
        """The calibration chunks, one at a time."""

        def __init__(self):
            self.inputs = iter(chunks)

        def get_next(self):
            """The next input, or None at the end."""
            wav = next(self.inputs, None)
            return None if wav is None else {"wav": wav.detach().cpu().numpy()}

    prepared = Path(target).with_suffix(".prepared.onnx")
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["Conv"], per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=[convs[i] for i in float_layers],
                            calibrate_method={"percentile": CalibrationMethod.Percentile,
                                              "minmax": CalibrationMethod.MinMax,
                                              "entropy": CalibrationMethod.Entropy}[method],
                            extra_options={"CalibPercentile": percentile})
    finally:
        logging.disable(previous)
    prepared.unlink()
    return Path(target)


def int8_convs(model):
    """For each Conv node of an ONNX graph, in graph order: whether it runs in int8 (any of its
    inputs comes from a ``DequantizeLinear``, as onnxruntime's static QDQ quantization leaves
    it); the layers ``quantize_onnx_static_int8`` kept in float give False.

    Arguments
    ---------
    model : str, Path or bytes
        The ONNX file or its bytes.

    Returns
    -------
    list of bool
    """
    import onnx

    graph = (onnx.load_from_string(model) if isinstance(model, bytes)
             else onnx.load(str(model))).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear"
                   for out in node.output}
    return [any(name in dequantized for name in node.input) for node in graph.node
            if node.op_type == "Conv"]


class SplitInt8:
    """A backbone (and head) served by onnxruntime in two graphs with the frame choice between
    them, in torch: the CNN feature encoder (float, or static int8 with ``calibration``), then
    whichever CNN frames ``keep_fn`` keeps, then the transformer and head on those frames with
    their linear layers in dynamic int8. Token dropping's choice depends on the data, so the
    whole path does not export as one graph; split, every part but the choice runs in
    onnxruntime. Batch 1 (a served utterance).

    Arguments
    ---------
    cnn : str or Path
        The CNN's float ONNX file (``wav -> features [1, frames, channels]``).
    encoder : str or Path
        The transformer's and head's float ONNX file (``features -> outputs``; the input is
        named ``wav`` too, see ``s3brain.utils.efficiency.export_onnx``).
    keep_fn : callable, optional
        ``(features, frame lengths) -> keep [1, frames]`` bool, e.g. a ``TokenDropping`` or
        SALAD's detector; None keeps every frame.
    threads : int
        onnxruntime intra-op threads.
    calibration : iterable of torch.Tensor, optional
        Waveforms: the CNN in static int8, calibrated on them; None: the CNN in float.
    static_options : dict, optional
        More arguments of ``quantize_onnx_static_int8`` for the CNN (``float_layers``,
        ``percentile``, ``method``, ``max_chunks``, ``chunk``).

    Example
    -------
    >>> import tempfile
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
    >>> half = lambda features, lengths: torch.arange(features.shape[1])[None] % 2 == 0
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     split = SplitInt8.export(model, None, torch.randn(1, 1600), tmp, keep_fn=half)
    >>> split(torch.randn(1, 3200)).shape
    torch.Size([1, 160, 32])
    """

    backend = "onnxruntime"

    def __init__(self, cnn, encoder, keep_fn=None, threads=1, calibration=None,
                 static_options=None):

        self.keep_fn, self.cnn_int8 = keep_fn, calibration is not None
        self.cnn_float = Path(cnn).read_bytes()
        if self.cnn_int8:
            cnn = quantize_onnx_static_int8(cnn, Path(cnn).with_suffix(".int8.onnx"),
                                            calibration, **(static_options or {}))
        self.cnn_model = Path(cnn).read_bytes()
        self.encoder = OnnxInt8(encoder, threads)
        self.cnn, self.threads = onnx_session(self.cnn_model, threads), threads

    def with_static_cnn(self, calibration, **static_options):
        """The same transformer session with the float CNN quantized anew: static int8
        calibrated on ``calibration`` with ``static_options`` (see
        ``quantize_onnx_static_int8``), or in float with ``calibration=None``.

        Returns
        -------
        SplitInt8
        """
        other = copy.copy(self)
        other.cnn_int8 = calibration is not None
        other.cnn_model = self.cnn_float
        if other.cnn_int8:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "cnn.onnx").write_bytes(self.cnn_float)
                other.cnn_model = quantize_onnx_static_int8(
                    Path(tmp) / "cnn.onnx", Path(tmp) / "cnn.int8.onnx", calibration,
                    **static_options).read_bytes()
        other.cnn = onnx_session(other.cnn_model, self.threads)
        return other

    @classmethod
    def export(cls, model, head, example, folder, keep_fn=None, normalize=False,
               output_norm=False, threads=1, calibration=None, static_options=None):
        """Export the two graphs of ``model`` (a transformers model of a family of
        ``s3brain.backbone.families.FAMILIES``, deployable: shrunk, merged) and ``head`` to ``folder``.

        Arguments
        ---------
        model : torch.nn.Module
            The transformers model (or a SpeechBrain wrapper of one).
        head : torch.nn.Module or None
            What reads the last hidden state; None: the hidden state is the output.
        example : torch.Tensor
            An example waveform ``[1, samples]``.
        folder : str or Path
            Where the ONNX files go.
        keep_fn, threads, calibration, static_options
            As for ``SplitInt8``.
        normalize, output_norm : bool
            The SpeechBrain wrapper's input normalisation and ``output_norm``
            (``s3brain.backbone.normalized_input``, ``output_normalized``), in the graphs.

        Returns
        -------
        SplitInt8
        """

        model = hf_model(model)
        flags = type("Flags", (), {"normalize_wav": normalize, "output_norm": output_norm})

        def cnn(wav):
            """CNN features ``[1, frames, channels]`` of the waveform."""
            wav = normalized_input(flags, wav, traceable=True)
            return model.feature_extractor(wav).transpose(1, 2)

        def encoder(features):
            """Outputs on the (kept) CNN frames."""
            hidden = model.feature_projection(features)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # HuBERT: no tuple
            hidden = output_normalized(flags, run_blocks(model, hidden))
            return hidden if head is None else head(hidden)

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        modules = [model] + ([head] if head is not None else [])
        with torch.no_grad():
            export_onnx(cnn, [model], example, folder / "cnn.onnx")
            export_onnx(encoder, modules, cnn(example), folder / "encoder.onnx")
        return cls(folder / "cnn.onnx", folder / "encoder.onnx", keep_fn, threads, calibration,
                   static_options)

    def set_threads(self, threads):
        """Serve with ``threads`` intra-op threads (new sessions, if they differ).

        Arguments
        ---------
        threads : int
            Intra-op threads.
        """

        if threads != self.threads:
            self.cnn, self.threads = onnx_session(self.cnn_model, threads), threads
            self.encoder.set_threads(threads)

    def features(self, wav):
        """The CNN features ``[1, frames, channels]`` of ``wav [1, samples]`` (a tensor)."""
        return torch.from_numpy(self.cnn.run(None, {"wav": wav.cpu().numpy()})[0])

    def with_keep(self, keep_fn):
        """The same graphs with another frame choice (e.g. the cost's uniform share and the
        run's detector), sharing the sessions.

        Arguments
        ---------
        keep_fn : callable or None
            As for ``SplitInt8``.

        Returns
        -------
        SplitInt8
        """
        other = copy.copy(self)
        other.keep_fn = keep_fn
        return other

    def __call__(self, wav):
        """Outputs for ``wav [1, samples]``, as a tensor."""
        if wav.shape[0] != 1:
            raise ValueError(f"SplitInt8 serves one utterance at a time, got a batch of "
                             f"{wav.shape[0]}")
        features = self.features(wav)
        if self.keep_fn is not None:
            frames = features.shape[1]
            with torch.no_grad():
                keep = self.keep_fn(features, torch.tensor([frames]))[0]
            if not bool(keep.any()):
                keep[0] = True  # as the run: an utterance keeps at least one frame
            features = features[:, keep]
        return self.encoder(features)
