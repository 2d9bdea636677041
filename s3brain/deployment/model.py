"""The model a run deploys, and what it costs.

- ``deploy`` (a ``Deployment``): one CPU copy of the trained backbone, head and the strategies'
  modules, made deployable by the strategies (masks folded, structured pruning shrunk, LoRA
  merged, frames dropped), in fp32 and, once quantized, in int8;
- ``deployment_cost`` (or ``cost_report``, both at once): parameters, FLOPs (attention
  included), CPU latency, real-time factor, peak memory, onnxruntime latency and, beside them,
  the int8 model's latency and real-time factor;
- ``int8_error_rates``: the int8 deployed model's error rates on a test set (batch 1, greedy
  CTC) and how often its transcript is fp32's (``wer_test_clean_int8``, ``per_test_int8``...).
"""

import copy
import logging
import tempfile

import torch
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.utils.distributed import if_main_process
from speechbrain.utils.metric_stats import ErrorRateStats
from torch import nn

from s3brain.backbone.audio import backbone_rate
from s3brain.backbone.wrapper import wrapper_forward
from s3brain.deployment.int8 import OnnxInt8, SplitInt8, torch_int8
from s3brain.deployment.modules import Backbone, CTCEncoder, UtteranceModel, token_labels
from s3brain.strategies.base import ExportError, deployable
from s3brain.strategies.s3router.masks import weight_sparsity
from s3brain.strategies.token_dropping import encode_with_dropping
from s3brain.utils.checkpoint import unwrapped
from s3brain.utils.efficiency import (
    count_parameters,
    export_onnx,
    measure_cost,
    median_latency_ms,
    onnx_session,
    peak_memory_mb,
)

logger = logging.getLogger(__name__)


def _wrapper_forward(ssl, head, all_layers):
    """The deployed model through the backbone wrapper's own forward (what the cost measures)."""

    def forward(wav):
        """Outputs of the deployed model."""
        feats = ssl(wav, None)
        if feats.dim() == 4 and not all_layers:  # a backbone returning every block's output
            feats = feats[-1]
        return head(feats)

    return forward


def _deployed_forward(ssl, head, hf, all_layers):
    """The deployed model's path on a raw waveform, written so that it traces to ONNX with any
    length (``s3brain.backbone.wrapper_forward`` with the traceable normalisation)."""

    def forward(wav):
        """Head outputs of the deployed model."""
        if hasattr(ssl, "before"):  # e.g. input downsampling
            wav = ssl.before(wav)
        feats = wrapper_forward(ssl, wav, model=hf, every_layer=False, traceable=True)
        if hasattr(ssl, "after"):
            feats = ssl.after(feats)
        return head(feats)

    return None if all_layers else forward


class Deployment:
    """The model that serves one task on a CPU: one copy of the trained backbone, head and
    extra modules, made deployable by the strategies (masks folded, structured pruning shrunk,
    LoRA merged, frames dropped), in fp32 and, once ``quantize`` has run, in dynamic int8.

    The int8 model is the onnxruntime one (the ONNX export of the deployed path, its linear
    layers quantized; 1.73x faster than fp32 at wav2vec2-base size on one thread, where torch's
    int8 is 1.36x: ``benchmarks/int8_backends.py``); with token dropping, whose frame choice
    does not export, ``s3brain.deployment.int8.SplitInt8`` (the CNN and the transformer exported
    apart, the choice between them in torch); else, for a model whose path is not exportable
    (SUPERB's weighted sum of every layer, token merging), torch's. ``decoders``
    gives both as the run decodes: the same paths, except with token dropping, where the run's
    dropper (its detector in float) chooses the frames that the deployed copy, for the cost,
    keeps a uniform share of. Early exit (each utterance stops at its own block) and a head on
    every layer do not decode this way (``not_decodable`` says why).

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper (``hparams["ssl"]``), possibly DDP-wrapped; left untouched.
    head : torch.nn.Module
        What follows the backbone: reads the last block's output, or every hidden layer
        ``[L, B, T, D]`` with ``all_layers``.
    strategies : list of Strategy
        The run's strategies.
    all_layers : bool
        Whether the head reads every hidden layer.
    extra : sequence of torch.nn.Module
        The strategies' extra modules (adapters, exit heads, the token dropper).

    Example
    -------
    >>> from s3brain.backbone import default_backbone, load_ssl
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ssl = load_ssl(default_backbone(), tmp)
    >>> head = nn.Linear(ssl.model.config.hidden_size, 5)
    >>> deployment = Deployment(ssl, head)
    >>> deployment.quantize(torch.randn(1, 16000)).backend
    'onnxruntime'
    >>> wav = torch.randn(1, 8000)
    >>> deployment.int8(wav).shape == deployment.fp32(wav).shape
    True
    """

    def __init__(self, ssl, head, strategies=(), all_layers=False, extra=()):
        live = {"ssl": unwrapped(ssl), "head": unwrapped(head),
                "extra": [unwrapped(m) for m in extra], "strategies": list(strategies)}
        self.params_trainable = count_parameters(
            nn.ModuleList([live["ssl"], live["head"], *live["extra"]]), trainable_only=True)
        # One deep copy of everything, the strategies included, so that a module shared
        # between entries (a strategy's token dropper and the run's extra module) stays one
        # module in it: what the cost measures is what the inference folder ships.
        copies = copy.deepcopy(live)
        ssl = deployable([], copies["ssl"].cpu())  # masks folded
        self.head, self.extra = copies["head"].cpu(), [m.cpu() for m in copies["extra"]]
        #: The strategies' copies, whose modules are this deployment's.
        self.strategies = copies["strategies"]
        self.rate = backbone_rate(ssl)
        self.backbone_bytes = sum(p.numel() * p.element_size() for p in ssl.parameters())
        self.ssl = deployable(self.strategies, ssl).cpu()
        self.hf = self.ssl.model
        self.all_layers = all_layers
        self.early_exit = any(s.decodes_alone for s in self.strategies)
        # inference: no dropout, no masking
        self.modules = nn.ModuleList([self.ssl, self.head, *self.extra]).eval()
        # and no gradient: the ONNX export takes tensors that require one, held outside the
        # modules (the deployed downsampler), for trainable constants and fails
        downsampler = getattr(self.ssl, "downsampler", None)
        for module in (self.modules, downsampler) if downsampler is not None else (self.modules,):
            module.requires_grad_(False)
        self.fp32 = _wrapper_forward(self.ssl, self.head, all_layers)
        exportable = getattr(self.ssl, "onnx_exportable", True)
        self.exportable = (_deployed_forward(self.ssl, self.head, self.hf, all_layers)
                           if exportable else None)
        # Token dropping's deployed copy keeps a uniform share of frames, as costly as the
        # detector's choice; to decode, the run's dropper (a copy, in ``extra``) chooses.
        self.dropper = next((s.frame_chooser() for s in self.strategies
                             if s.frame_chooser() is not None), None)
        #: Why the deployed copy does not decode as the run does (its int8 error rates are
        #: then not measured), or None.
        self.not_decodable = (
            "it reads every layer (not a CTC model)" if all_layers
            else "early exit decodes each utterance at its own block" if self.early_exit
            else "its deployed copy keeps a uniform share of frames (for the cost only)"
            if not exportable and self.dropper is None
            and not getattr(self.ssl, "decodes_as_run", False) else None)
        self.int8 = self.int8_decoding = None
        #: Waveforms that calibrate a static int8 CNN (``quantize``), or None: the CNN in float.
        self.calibration = None
        #: The static int8 CNN's options (``quantize_onnx_static_int8``): by default its first
        #: conv layer, on the raw waveform, stays in float (the yaml's
        #: ``int8_cnn_float_layers``; ``benchmarks/records/int8_cnn.json``: more accurate and
        #: faster than that layer in int8).
        self.static_options = {"float_layers": [0]}
        self.fp32_decoding = self._decoding(self.ssl, self.head) or self.fp32
        self.onnx_fp32 = None  # the float onnxruntime session, once quantize has exported it

    def quantize(self, example, threads=1):
        """Build ``self.int8`` (and ``self.onnx_fp32`` with the onnxruntime backend): the
        exported path quantized by onnxruntime, else a torch int8 copy. With ``calibration``
        set (waveforms; the yaml's ``int8_cnn_calibration``), a plain or token-dropping
        backbone's CNN is in static int8 too (``SplitInt8``, with ``static_options``).

        Arguments
        ---------
        example : torch.Tensor
            A waveform ``[1, samples]`` for the export.
        threads : int
            onnxruntime intra-op threads.

        Returns
        -------
        callable
            ``self.int8``: ``wav -> outputs``, with ``backend`` (``onnxruntime`` or ``torch``).
        """
        plain = (self.exportable is not None and not self.early_exit
                 and not hasattr(self.ssl, "before") and not hasattr(self.ssl, "after"))
        if self.calibration is not None and (plain or hasattr(self.ssl, "keep")):
            # the CNN in static int8 too: CNN and transformer exported apart
            keep = getattr(self.ssl, "keep", None)
            with tempfile.TemporaryDirectory() as tmp:
                split = SplitInt8.export(self.hf, self.head, example, tmp, keep_fn=keep,
                                         normalize=self.ssl.normalize_wav,
                                         output_norm=self.ssl.output_norm, threads=threads,
                                         calibration=self.calibration,
                                         static_options=self.static_options)
            self.int8 = split
            self.int8_decoding = (split.with_keep(self.dropper) if self.dropper is not None
                                  else split)
            return self.int8
        if self.exportable is not None:
            try:
                with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
                    export_onnx(self.exportable, [self.hf, self.head, *self.extra], example,
                                f"{tmp}/model.onnx")
                    self.onnx_fp32 = onnx_session(f"{tmp}/model.onnx", threads)
                    self.int8 = self.int8_decoding = OnnxInt8(f"{tmp}/model.onnx", threads)
                return self.int8
            except Exception as err:  # noqa: BLE001 (a failed export must not lose the run)
                logger.warning("ONNX export or quantization failed (%s): torch int8 instead", err)
                self.onnx_fp32 = None
        elif hasattr(self.ssl, "keep") and not self.all_layers:
            # token dropping: CNN and transformer exported apart, the frame choice between
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    split = SplitInt8.export(self.hf, self.head, example, tmp,
                                             normalize=self.ssl.normalize_wav,
                                             output_norm=self.ssl.output_norm, threads=threads)
                self.int8 = split.with_keep(self.ssl.keep)
                self.int8_decoding = (split.with_keep(self.dropper) if self.dropper is not None
                                      else self.int8)
                return self.int8
            except Exception as err:  # noqa: BLE001
                logger.warning("split ONNX export or quantization failed (%s): torch int8 "
                               "instead", err)
        ssl, head, *_ = torch_int8([self.ssl, self.head, *self.extra])
        self.int8 = _wrapper_forward(ssl, head, self.all_layers)
        self.int8.backend = "torch"
        self.int8_decoding = self._decoding(ssl, head) or self.int8
        return self.int8

    def _decoding(self, ssl, head):
        """With token dropping, the path that decodes (the run's dropper choosing the frames
        of ``ssl``'s wrapped backbone, then ``head``); else None (the cost's path decodes)."""
        if self.dropper is None:
            return None

        def forward(wav):
            """Head outputs on the frames the dropper keeps."""
            return head(encode_with_dropping(ssl.ssl, wav, None, self.dropper)[0])

        forward.backend = getattr(self.int8, "backend", "fp32")
        return forward

    def inference_parts(self):
        """What the strategies add to the shipped model (``Strategy.export``): the changed
        forward (``encode``, at most one) and the backbone's extra constructor arguments.

        Returns
        -------
        dict
            ``{"encode": module or None, "backbone": dict}``.

        Raises
        ------
        ExportError
            A strategy cannot be shipped, or changes the forward without saying how.
        """
        parts = {"encode": None, "backbone": {}}
        for strategy in self.strategies:
            added = strategy.export(self)
            if added.get("encode") is not None:
                parts["encode"] = added["encode"]
            elif strategy.changes_forward:
                raise ExportError(f"strategy {type(strategy).__name__} changes the backbone's "
                                  f"forward but its export hook does not say how to ship it")
            parts["backbone"].update(added.get("backbone", {}))
        return parts

    def ctc_model(self, blank_index=0):
        """The shipped CTC model (``s3brain.deployment.modules.CTCEncoder``): the deployed
        backbone rebuilt from its transformers config with its weights, this deployment's head
        and CTC layer, and the strategy's forward made of this deployment's modules.

        Arguments
        ---------
        blank_index : int
            The CTC blank.

        Returns
        -------
        CTCEncoder
            In eval mode, on the CPU.
        """
        if self.all_layers:
            raise ExportError("this model reads every hidden layer: it is a classifier "
                              "(utterance_model), not a CTC model")
        parts = self.inference_parts()
        head, ctc_lin = self.head  # the recipes' Sequential(head, ctc_lin)
        backbone = Backbone.of(self.ssl, sample_rate=self.rate, **parts["backbone"])
        return CTCEncoder(backbone, head, ctc_lin, blank_index=blank_index,
                          encode=parts["encode"]).eval()

    def utterance_model(self):
        """The shipped utterance-level model (``s3brain.deployment.modules.UtteranceModel``):
        the deployed backbone returning every hidden layer, rebuilt from its config with its
        weights, and this deployment's head.

        Returns
        -------
        UtteranceModel
            In eval mode, on the CPU.
        """
        parts = self.inference_parts()
        if parts["encode"] is not None:
            raise ExportError(f"{type(parts['encode']).__name__}: a strategy that changes the "
                              f"backbone's forward has no classifier export yet")
        backbone = Backbone.of(self.ssl, sample_rate=self.rate, output_all_hiddens=True,
                               **parts["backbone"])
        return UtteranceModel(backbone, self.head).eval()

    def decoders(self):
        """The fp32 and int8 models as the run decodes (``quantize`` runs first if it has not).

        Returns
        -------
        tuple of callable
            ``(fp32, int8)``, each ``wav [1, samples] -> logits [1, frames, labels]``.
        """
        if self.int8 is None:
            self.quantize(torch.zeros(1, self.rate))
        return self.fp32_decoding, self.int8_decoding


def deploy(ssl, head, strategies=(), all_layers=False, extra=()):
    """The ``Deployment`` of a run's model, on the main process only (None elsewhere: the
    cost is measured once, by the process that writes the results).

    Arguments
    ---------
    ssl, head, strategies, all_layers, extra
        As for ``Deployment``.

    Returns
    -------
    Deployment or None

    Example
    -------
    >>> import tempfile
    >>> from s3brain.backbone import default_backbone, load_ssl
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ssl = load_ssl(default_backbone(), tmp)
    >>> deploy(ssl, nn.Linear(ssl.model.config.hidden_size, 5)).not_decodable is None
    True
    """
    if not if_main_process():
        return None
    return Deployment(ssl, head, strategies, all_layers, extra)


def deployment_cost(deployment, seconds=10, repeats=3, threads=1):
    """Parameters, FLOPs, latency, real-time factor and peak memory of a deployed model, and
    its onnxruntime fp32 and int8 latency, on ``seconds`` of audio, side by side with the same
    input and threads.

    Arguments
    ---------
    deployment : Deployment or None
        The deployed model (``deploy``); None off the main process.
    seconds : float
        Audio length of the measurement.
    repeats : int
        Timed repeats (the median is kept).
    threads : int
        CPU threads for the timing.

    Returns
    -------
    dict or None
        None for no deployment; else ``params_total``, ``params_transformer``,
        ``params_trainable``, ``flops_<s>s``, ``latency_ms_<s>s``, ``rtf``,
        ``latency_threads``, ``peak_memory_mb_<s>s``, ``onnx_latency_ms_<s>s``,
        ``latency_ms_<s>s_int8``, ``rtf_int8``, ``int8_backend``, ``backbone_bytes`` (before
        shrinking), ``sparsity_linear``, ``storage_bytes_per_task`` (a whole model) and
        ``cost_seconds``.

    Example
    -------
    >>> deployment_cost(None) is None
    True
    """
    if deployment is None:
        return None
    forward, modules, hf = deployment.fp32, deployment.modules, deployment.hf
    cost = measure_cost(forward, seconds=seconds, sample_rate=deployment.rate, repeats=repeats,
                        threads=threads)
    tag = f"{seconds:g}s"
    wav = torch.randn(1, int(seconds * deployment.rate),
                      generator=torch.Generator().manual_seed(0)) * 0.1
    cost[f"peak_memory_mb_{tag}"] = round(peak_memory_mb(forward, wav), 1)
    cost[f"onnx_latency_ms_{tag}"] = cost[f"latency_ms_{tag}_int8"] = cost["rtf_int8"] = None
    cost["int8_backend"] = None
    try:  # the paper's deployment path; a failed export must not lose the run's results
        int8 = deployment.quantize(wav, threads)
        if deployment.onnx_fp32 is not None:
            feed = {"wav": wav.numpy()}
            with torch.no_grad():
                difference = float((torch.from_numpy(deployment.onnx_fp32.run(None, feed)[0])
                                    - deployment.exportable(wav)).abs().max())
            if difference > 1e-3:
                logger.warning("ONNX output differs from torch by %.2g", difference)
            cost[f"onnx_latency_ms_{tag}"] = round(median_latency_ms(
                lambda: deployment.onnx_fp32.run(None, feed), repeats=repeats), 2)
        else:
            logger.warning("ONNX latency not measured: this model's path does not export")
        int8_ms = median_latency_ms(int8, wav, repeats=repeats, threads=threads)
        cost.update({f"latency_ms_{tag}_int8": round(int8_ms, 2),
                     "rtf_int8": round(int8_ms / 1000 / seconds, 5), "int8_backend": int8.backend})
    except Exception as err:  # noqa: BLE001
        logger.warning("int8 deployment not measured: %s", err)
    return {"backbone_bytes": deployment.backbone_bytes,
            "sparsity_linear": round(weight_sparsity(hf), 4),
            "params_total": count_parameters(modules),
            "params_transformer": count_parameters(hf.encoder),
            "params_trainable": deployment.params_trainable,
            # a strategy that changes weights stores a whole model per task
            "storage_bytes_per_task": sum(p.numel() * p.element_size()
                                          for p in modules.parameters()),
            "cost_seconds": seconds,
            **{k: cost[k] for k in (f"flops_{tag}", f"latency_ms_{tag}", "rtf", "latency_threads",
                                    f"peak_memory_mb_{tag}", f"onnx_latency_ms_{tag}",
                                    f"latency_ms_{tag}_int8", "rtf_int8", "int8_backend")}}


def cost_report(ssl, head, strategies=(), seconds=10, repeats=3, threads=1, all_layers=False,
                extra=()):
    """The cost of the model that serves one task (``deployment_cost`` of its ``deploy``), on
    ``seconds`` of audio, measured on a CPU copy made deployable by the strategies (what would
    be deployed), whatever device trained the model.

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper (``hparams["ssl"]``), possibly DDP-wrapped.
    head : torch.nn.Module
        What follows the backbone (a ``Sequential`` of the head and the output layer): reads the
        last block's output, or every hidden layer ``[L, B, T, D]`` with ``all_layers``.
    strategies : list of Strategy
        The run's strategies.
    seconds : float
        Audio length of the measurement.
    repeats : int
        Timed repeats (the median is kept).
    threads : int
        CPU threads for the timing.
    all_layers : bool
        Whether the head reads every hidden layer (SUPERB's weighted sum).
    extra : sequence of torch.nn.Module
        The strategies' extra modules (adapters, exit heads), counted in parameters and
        storage.

    Returns
    -------
    dict or None
        None off the main process; else ``deployment_cost``'s figures.

    Example
    -------
    >>> import tempfile
    >>> from s3brain.backbone import default_backbone, load_ssl
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ssl = load_ssl(default_backbone(), tmp)
    >>> cost = cost_report(ssl, nn.Linear(ssl.model.config.hidden_size, 5), seconds=1, repeats=1)
    >>> cost["int8_backend"], cost["latency_ms_1s_int8"] > 0, cost["rtf_int8"] > 0
    ('onnxruntime', True, True)
    """
    return deployment_cost(deploy(ssl, head, strategies, all_layers, extra), seconds=seconds,
                           repeats=repeats, threads=threads)


def int8_error_rates(deployment, dataset, split, label_encoder, blank_index=0, units="chars",
                     enabled=True):
    """Error rates of the int8 deployed model on a test set: each utterance alone (batch 1, as
    deployed, on the CPU, with torch's number of threads) through the int8 model and the fp32
    one, greedy CTC, scored with SpeechBrain's ``ErrorRateStats`` against the reference.

    Arguments
    ---------
    deployment : Deployment or None
        The deployed model (``deploy``; its int8 model is built if ``deployment_cost`` has not
        built it); None off the main process.
    dataset : iterable of dict
        The test set (a ``DynamicItemDataset``): items with ``id``, ``sig`` (one waveform at the
        backbone's rate) and ``wrd`` (words) or, with phonemes, ``phn``.
    split : str
        The split's name (``test-clean``: dashes become underscores).
    label_encoder : speechbrain.dataio.encoder.CTCTextEncoder
        The CTC labels.
    blank_index : int
        The CTC blank.
    units : str
        ``chars`` (``wrd`` references; WER and CER) or ``phonemes`` (``phn``; PER).
    enabled : bool
        False (the yaml's ``int8_eval``) skips the pass: every key null.

    Returns
    -------
    dict
        ``wer_<split>_int8`` and ``cer_<split>_int8`` (or ``per_<split>_int8``) and
        ``int8_same_transcript_<split>``, the share of utterances whose int8 transcript equals
        fp32's; null where not measured (the reason is logged); empty off the main process.

    Example
    -------
    >>> int8_error_rates(None, [], "test-clean", None)
    {}
    """
    tag = split.replace("-", "_")
    rates = ["wer", "cer"] if units == "chars" else ["per"]
    keys = [f"{r}_{tag}_int8" for r in rates] + [f"int8_same_transcript_{tag}"]
    if deployment is None:
        return {}
    reason = ("int8_eval is False" if not enabled else deployment.not_decodable
              if deployment.not_decodable else None)
    if reason is None:
        try:
            models = deployment.decoders()
        except Exception as err:  # noqa: BLE001
            reason = f"no int8 model ({err})"
    if reason is not None:
        logger.info("int8 error rates on %s not measured: %s", split, reason)
        return dict.fromkeys(keys)
    if hasattr(models[1], "set_threads"):  # the cost's threads were for timing
        models[1].set_threads(torch.get_num_threads())
    stats = [ErrorRateStats(split_tokens=r == "cer") for r in rates]
    fp32_stats = ErrorRateStats()
    same = total = 0
    with torch.no_grad():
        for item in dataset:
            wav = item["sig"][None].float()
            target = (item["wrd"].split(" ") if units == "chars" else item["phn"].split())
            hyps = []
            for model in models:
                logits = model(wav)
                tokens = ctc_greedy_decode(logits, torch.ones(1), blank_id=blank_index)[0]
                hyps.append(token_labels(tokens, label_encoder, units))
            fp32, int8 = hyps
            for stat in stats:
                stat.append([item["id"]], [int8], [target])
            fp32_stats.append([item["id"]], [fp32], [target])
            same += int8 == fp32
            total += 1
    if not total:
        logger.warning("int8 error rates on %s not measured: no utterance", split)
        return dict.fromkeys(keys)
    out = {key: round(float(stat.summarize("error_rate")), 2) for key, stat in zip(keys, stats)}
    out[keys[-1]] = round(same / total, 4)
    logger.info("%s, batch 1 on the CPU: %s %.2f in fp32, %.2f in int8 (%s); same transcript "
                "on %d of %d utterances", split, rates[0].upper(),
                fp32_stats.summarize("error_rate"), out[keys[0]],
                getattr(models[1], "backend", "int8"),
                same, total)
    return out
