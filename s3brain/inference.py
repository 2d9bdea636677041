"""A finished CTC run as a SpeechBrain inference folder: ``hyperparams.yaml`` and the files it
loads, so that ``speechbrain.inference.ASR.EncoderASR`` transcribes with the deployed model.

``export_inference(run_folder)`` reads the run's ``hyperparams.yaml``, sets its strategies up on
the backbone, loads the checkpoint the recipe tested (lowest dev WER or PER) and writes
``<run_folder>/inference/``:

- ``hyperparams.yaml``: the ``encoder`` (``CTCEncoder``: the deployed backbone, built from its
  transformers config, masks folded, SAFARI's pruned units removed, LoRA merged, Houlsby
  adapters kept; then the head and the CTC layer; input downsampling, token dropping with its
  detector, or early exit with its heads and threshold, as the run had them), the
  ``tokenizer`` (``CTCLabels``), greedy CTC as ``decoding_function``, an ``audio_normalizer``
  that reads any rate and channel count as the recipes do (``s3brain.audio``), and the
  ``pretrainer`` that loads the two files below;
- ``encoder.ckpt``: the encoder's ``state_dict``; ``tokenizer.ckpt``: the labels.

Use::

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="results/weight_ft/1986/inference", savedir="asr")
    asr.transcribe_file("speech.wav")

or ``python -m s3brain.inference <run folder>`` to export from the command line.
``S3RouterASR`` serves several S3-Router tasks (mask files) on one backbone.

A SUPERB run (``recipes/SUPERB/<task>``) is exported by ``export_classifier`` (the same command
line): the deployed backbone returning every hidden layer and the run's ``UtteranceHead``
(``classifier.ckpt``), a label encoder per target, served by ``UtteranceClassifier`` through
``foreign_class(source, pymodule_file="custom.py", classname="UtteranceClassifier")``;
``classify_file("speech.wav")`` gives ``{target: label}``.

Example
-------
>>> labels = CTCLabels(separator=" ")
>>> labels.insert_blank(index=0)
>>> labels.update_from_iterable(["a", "b"], sequence_input=False)
>>> labels.decode_ndim([1, 2, 7])
['a b']
"""

import argparse
import copy
import json
import logging
import math
import sys
from pathlib import Path

import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.checkpoints import (mark_as_loader, mark_as_transfer,
                                           register_checkpoint_hooks)
from torch import nn

from s3brain.audio import backbone_rate, resample, to_mono
from s3brain.backbone import normalized_input, output_normalized, wrapper_forward

logger = logging.getLogger(__name__)

#: What a folder written by ``export_inference`` holds besides ``hyperparams.yaml``.
ENCODER_FILE, TOKENIZER_FILE = "encoder.ckpt", "tokenizer.ckpt"
#: What a folder written by ``export_classifier`` holds besides ``hyperparams.yaml``,
#: ``custom.py`` and a ``label_encoder_<target>.ckpt`` per target.
CLASSIFIER_FILE = "classifier.ckpt"


class ExportError(ValueError):
    """A run that cannot be exported as an inference folder (the message says why)."""


class CTCLabels(CTCTextEncoder):
    """The recipes' CTC labels as ``EncoderASR`` decodes them: ids beyond the label set are
    dropped (a head may be wider than a phoneme set), and with a ``separator`` (phonemes) one
    decoded sequence gives one string, labels joined by it (``EncoderASR`` joins the labels
    of a sequence with ``""``, which would glue phonemes together).

    Arguments
    ---------
    separator : str
        ``""`` for characters (the space is a label), ``" "`` for phonemes.

    Example
    -------
    >>> labels = CTCLabels()
    >>> labels.insert_blank(index=0)
    >>> labels.update_from_iterable(list("ab "), sequence_input=False)
    >>> "".join(labels.decode_ndim([1, 3, 2, 9]))
    'a b'
    """

    def __init__(self, separator=""):
        super().__init__()
        self.separator = separator
        self.ignore_len()

    def decode_ndim(self, x):
        """Labels of ``x`` (nested lists or tensors of ids); a flat sequence of ids loses the
        ids outside the label set and, with a separator, becomes one string.

        Arguments
        ---------
        x : Any
            An id, or a (nested) sequence of ids.

        Returns
        -------
        list or str
            The labels, nested as ``x``.
        """
        if isinstance(x, torch.Tensor):
            x = x.tolist()
        if isinstance(x, (list, tuple)) and all(isinstance(i, int) for i in x):
            labels = [self.ind2lab[i] for i in x if i in self.ind2lab]
            return [self.separator.join(labels)] if self.separator else labels
        return super().decode_ndim(x)


class AudioNormalizer:
    """What ``Pretrained.load_audio`` does with a file's samples, as the recipes read audio
    (``s3brain.audio.read_audio``): the channels averaged, then resampled to the backbone's
    rate with torchaudio's sinc resampler.

    Arguments
    ---------
    sample_rate : int
        The backbone's rate.

    Example
    -------
    >>> normalize = AudioNormalizer(16000)
    >>> normalize(torch.ones(8000, 2), 8000).shape
    torch.Size([16000])
    """

    def __init__(self, sample_rate=16000):
        self.sample_rate = int(sample_rate)

    def __call__(self, audio, sample_rate):
        """One channel at the backbone's rate.

        Arguments
        ---------
        audio : torch.Tensor
            ``[time]`` or ``[time, channels]``.
        sample_rate : int
            The file's rate.

        Returns
        -------
        torch.Tensor
            ``[time']``, float32.
        """
        return resample(to_mono(audio.float()), sample_rate, self.sample_rate).contiguous()


class Backbone(nn.Module):
    """A transformers SSL model built from its config, run as SpeechBrain's ``Wav2Vec2``
    wrapper runs it (``s3brain.backbone.wrapper_forward``): the deployed backbone of an
    inference folder, whose weights ``encoder.ckpt`` holds.

    Arguments
    ---------
    config : dict
        The transformers config (``model_type`` and what differs from the family's defaults);
        a config with ``layer_intermediate_sizes`` builds the shrunk model of
        ``s3brain.shrunk_modeling``.
    normalize_wav : bool
        The wrapper's input normalisation.
    output_norm : bool
        The wrapper's output layer norm.
    sample_rate : int
        The rate the model reads.
    adapters : dict, optional
        ``{"bottleneck": int, "targets": [...]}``: Houlsby adapters inside the model
        (``s3brain.adapters.Adapters``), which a deployed model keeps.
    output_all_hiddens : bool
        Every hidden layer, ``[layers + 1, batch, frames, hidden]``, as the wrapper returns
        them for the SUPERB recipes' heads, instead of the last block's features.

    Example
    -------
    >>> backbone = Backbone({"model_type": "wav2vec2", "hidden_size": 32,
    ...     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
    ...     "conv_dim": [8], "conv_stride": [5], "conv_kernel": [10],
    ...     "num_feat_extract_layers": 1, "num_conv_pos_embedding_groups": 2}).eval()
    >>> backbone(torch.randn(1, 400), torch.ones(1)).shape
    torch.Size([1, 79, 32])
    """

    output_all_hiddens = False

    def __init__(self, config, normalize_wav=False, output_norm=False, sample_rate=16000,
                 adapters=None, output_all_hiddens=False):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        from s3brain import shrunk_modeling

        config = dict(config)
        model_type = config.pop("model_type")
        if config.get("layer_intermediate_sizes") is not None:
            config_name, model_name = shrunk_modeling.CLASSES[model_type]
            config = getattr(shrunk_modeling, config_name)(**config)
            self.model = getattr(shrunk_modeling, model_name)(config)
        else:
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **config))
        if adapters:
            from s3brain.adapters import Adapters

            Adapters(self.model, bottleneck=adapters["bottleneck"], targets=adapters["targets"])
        self.normalize_wav, self.output_norm = bool(normalize_wav), bool(output_norm)
        self.sampling_rate = int(sample_rate)
        self.output_all_hiddens = bool(output_all_hiddens)

    def forward(self, wavs, wav_lens=None):
        """The last block's features, ``[batch, frames, hidden]`` (every hidden layer,
        ``[layers + 1, batch, frames, hidden]``, with ``output_all_hiddens``).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor, optional
            Relative lengths.

        Returns
        -------
        torch.Tensor
        """
        return wrapper_forward(self, wavs, wav_lens)


def blank_padded(log_probs, wav_lens, blank_index):
    """Per-utterance log-probabilities of different lengths as one batch that greedy CTC
    (``speechbrain.decoders.ctc_greedy_decode``, which reads ``round(wav_len * frames)``
    frames) decodes as it decodes each alone: every utterance is followed by frames that are
    certainly blank, enough that its relative length covers its own frames.

    Arguments
    ---------
    log_probs : list of torch.Tensor
        ``[frames_i, outputs]`` each.
    wav_lens : torch.Tensor
        The batch's relative lengths.
    blank_index : int
        The CTC blank.

    Returns
    -------
    torch.Tensor
        ``[batch, frames, outputs]``.

    Example
    -------
    >>> out = blank_padded([torch.zeros(3, 2), torch.zeros(5, 2)], torch.tensor([1.0, 0.5]), 0)
    >>> out.shape, int(round(0.5 * out.shape[1])) >= 5
    (torch.Size([2, 10, 2]), True)
    """
    rel = [max(float(r), 1e-6) for r in wav_lens]
    frames = max(math.ceil(lp.shape[0] / r) for lp, r in zip(log_probs, rel))
    while any(round(r * frames) < lp.shape[0] for lp, r in zip(log_probs, rel)):
        frames += 1
    first = log_probs[0]
    out = torch.full((len(log_probs), frames, first.shape[-1]), -1e4, dtype=first.dtype,
                     device=first.device)
    out[:, :, blank_index] = 0.0
    for i, lp in enumerate(log_probs):
        out[i, : lp.shape[0]] = lp
    return out


@register_checkpoint_hooks
class CTCEncoder(nn.Module):
    """The deployed CTC model of a run, waveform to log-probabilities: the ``encoder`` of an
    ``EncoderASR`` inference folder.

    Exactly one of ``downsampler``, ``token_dropping`` and ``exit_heads`` may be given, as a
    run has at most one strategy that changes the forward; with token dropping or early exit
    the utterances give different frame counts, returned padded with certain blanks
    (``blank_padded``) so that greedy CTC decodes each as alone.

    Arguments
    ---------
    backbone : Backbone
        The deployed backbone.
    head : torch.nn.Module
        The recipe's head (features to ``ctc_lin``'s input).
    ctc_lin : torch.nn.Module
        The CTC output layer.
    blank_index : int
        The CTC blank.
    downsampler : s3brain.downsampling.InputDownsampling, optional
        Input downsampling before the backbone.
    token_dropping : s3brain.salad.TokenDropping, optional
        CNN frames dropped before the transformer (SALAD with its detector, or uniform).
    exit_heads : s3brain.early_exit.ExitHeads, optional
        Early exit: a CTC head after every block but the last.
    exit_criterion : str
        ``entropy`` or ``similarity``.
    exit_threshold : float
        The criterion's threshold.
    exit_min_layer : int
        The first block allowed to exit.

    Example
    -------
    >>> backbone = Backbone({"model_type": "wav2vec2", "hidden_size": 32,
    ...     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
    ...     "conv_dim": [8], "conv_stride": [5], "conv_kernel": [10],
    ...     "num_feat_extract_layers": 1, "num_conv_pos_embedding_groups": 2})
    >>> encoder = CTCEncoder(backbone, nn.Identity(), nn.Linear(32, 5)).eval()
    >>> encoder(torch.randn(2, 400), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 79, 5])
    """

    def __init__(self, backbone, head, ctc_lin, blank_index=0, downsampler=None,
                 token_dropping=None, exit_heads=None, exit_criterion="entropy",
                 exit_threshold=0.7, exit_min_layer=1):
        super().__init__()
        if sum(m is not None for m in (downsampler, token_dropping, exit_heads)) > 1:
            raise ValueError("give at most one of downsampler, token_dropping and exit_heads")
        self.backbone, self.head, self.ctc_lin = backbone, head, ctc_lin
        self.blank_index = int(blank_index)
        self.downsampler, self.token_dropping, self.exit_heads = (downsampler, token_dropping,
                                                                  exit_heads)
        self.exit_criterion, self.exit_threshold = exit_criterion, float(exit_threshold)
        self.exit_min_layer = int(exit_min_layer)

    def log_probs(self, features):
        """The head's CTC log-probabilities of backbone features.

        Arguments
        ---------
        features : torch.Tensor
            ``[batch, frames, hidden]``.

        Returns
        -------
        torch.Tensor
            ``[batch, frames, outputs]``.
        """
        return self.ctc_lin(self.head(features)).log_softmax(-1)

    def forward(self, wavs, wav_lens=None):
        """CTC log-probabilities of a batch of waveforms at the backbone's rate.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor, optional
            Relative lengths (all 1.0 when None).

        Returns
        -------
        torch.Tensor
            ``[batch, frames, outputs]``.
        """
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        if self.exit_heads is not None:
            return self._early_exit(wavs, wav_lens)
        if self.token_dropping is not None:
            from s3brain.salad import encode_with_dropping

            features, lens, _ = encode_with_dropping(self.backbone, wavs, wav_lens,
                                                     self.token_dropping)
            log_probs = self.log_probs(features)
            frames = (lens * log_probs.shape[1]).round().long().tolist()
            return blank_padded([lp[:n] for lp, n in zip(log_probs, frames)], wav_lens,
                                self.blank_index)
        if self.downsampler is not None:
            features = self.backbone(self.downsampler(wavs), wav_lens)
            return self.log_probs(self.downsampler.upsample(features))
        return self.log_probs(self.backbone(wavs, wav_lens))

    def _early_exit(self, wavs, wav_lens):
        """Each utterance alone through the blocks until its exit (``ctc.decode_at_exits``)."""
        from s3brain.early_exit import early_exit
        from s3brain.families import transformer_blocks

        blocks = len(transformer_blocks(self.backbone.model))

        def head_fn(i, hidden):
            """Logits of block ``i``'s exit (the final head after the last block)."""
            hidden = output_normalized(self.backbone, hidden)
            if i == blocks:
                return self.ctc_lin(self.head(hidden))
            return self.exit_heads[i - 1](hidden)

        outputs = []
        self.exit_blocks = []
        for wav, rel in zip(wavs, wav_lens):
            wav = wav[: int(round(float(rel) * wavs.shape[1]))].unsqueeze(0)
            log_probs, block = early_exit(self.backbone.model, self.exit_heads,
                                          normalized_input(self.backbone, wav),
                                          self.exit_criterion, self.exit_threshold,
                                          self.exit_min_layer, head_fn)
            outputs.append(log_probs[0])
            self.exit_blocks.append(block)
        return blank_padded(outputs, wav_lens, self.blank_index)

    @mark_as_transfer
    @mark_as_loader
    def load_strict(self, path, end_of_epoch=False):
        """Load ``encoder.ckpt``, every tensor required (SpeechBrain's default transfer only
        warns about missing ones).

        Arguments
        ---------
        path : str or Path
            The file.
        end_of_epoch : bool
            Unused (the checkpoint loader's signature).
        """
        del end_of_epoch
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


# Writing the yaml: the modules an inference folder builds, each described by its constructor.

def _yaml_block(data, indent):
    """Plain data as an indented yaml block."""
    lines = []
    for key, value in data.items():  # key by key: a list of numbers or words on one line
        if isinstance(value, (list, tuple)) and not any(isinstance(v, (list, dict))
                                                        for v in value):
            lines.append(f"{key}: {json.dumps(list(value))}")
        else:
            lines += yaml.safe_dump({key: value}, default_flow_style=False,
                                    sort_keys=False).splitlines()
    return "".join(" " * indent + line + "\n" for line in lines)


def _layer_yaml(module, indent):
    """``!new:`` yaml lines that build ``module`` (a head's layers), or ExportError."""
    pad = " " * indent
    name = f"{type(module).__module__}.{type(module).__qualname__}"
    if getattr(nn, type(module).__name__, None) is type(module):
        name = f"torch.nn.{type(module).__name__}"
    simple = {nn.LeakyReLU: lambda m: {"negative_slope": m.negative_slope},
              nn.ReLU: lambda m: {}, nn.GELU: lambda m: {"approximate": m.approximate},
              nn.Tanh: lambda m: {}, nn.Identity: lambda m: {},
              nn.Dropout: lambda m: {"p": m.p},
              nn.Linear: lambda m: {"in_features": m.in_features,
                                    "out_features": m.out_features,
                                    "bias": m.bias is not None},
              nn.LayerNorm: lambda m: {"normalized_shape": list(m.normalized_shape),
                                       "eps": m.eps,
                                       "elementwise_affine": m.elementwise_affine}}
    if type(module) in simple:
        args = simple[type(module)](module)
        return f"!new:{name}\n" + (_yaml_block(args, indent) if args else "")
    if isinstance(module, sb.nnet.linear.Linear) and not module.combine_dims \
            and module.max_norm is None:
        args = {"input_size": module.w.in_features, "n_neurons": module.w.out_features,
                "bias": module.w.bias is not None}
        return f"!new:{name}\n" + _yaml_block(args, indent)
    if isinstance(module, sb.nnet.containers.Sequential):
        lines = f"!new:{name}\n{pad}input_shape: [null, null, null]\n"
        for child_name, child in module.items():
            lines += f"{pad}{child_name}: {_layer_yaml(child, indent + 4)}"
        return lines
    if type(module) is nn.Sequential:
        lines = f"!new:{name}\n"
        for child in module:
            lines += f"{pad}- {_layer_yaml(child, indent + 4)}"
        return lines
    raise ExportError(f"cannot describe a {name} head layer in hyperparams.yaml: the export "
                      f"knows SpeechBrain's Linear and Sequential and torch's Linear, "
                      f"Sequential, LayerNorm, Dropout and activations")


def _strategy_parts(strategies):
    """The run's strategies sorted into what the export does with them, or ExportError."""
    from s3brain.strategies import (Adapters, Distillation, Downsampling, EarlyExit, InitFrom,
                                    LoRA, Masks, Pruning, TokenDropping)
    from s3brain.top_blocks import TopBlocks

    parts = {"deploy": [], "forward": None, "adapters": None}
    for strategy in strategies:
        kind = type(strategy).__name__
        if isinstance(strategy, (InitFrom, Distillation)):
            continue  # only training starts from them: the checkpoint holds the result
        if isinstance(strategy, TokenDropping) and strategy.dropper.method == "random":
            raise ExportError("random token dropping is a baseline whose kept frames come from "
                              "a random generator: its transcripts cannot be reproduced; "
                              "export a uniform or SALAD token-dropping run")
        if isinstance(strategy, (Downsampling, TokenDropping, EarlyExit)):
            parts["forward"] = strategy
        elif isinstance(strategy, Adapters) and not isinstance(strategy, LoRA):
            parts["adapters"] = strategy
        elif isinstance(strategy, (Masks, Pruning, LoRA, TopBlocks)):
            parts["deploy"].append(strategy)
        else:
            raise ExportError(f"strategy {kind} has no inference export yet")
    return parts


def _fix_relative_output(text, run_folder):
    """The run's yaml text with its output folder made absolute (``run_folder``) when the run
    wrote it relative to the folder it was started in."""
    for line in text.splitlines():
        if line.startswith("output_folder:"):
            old = line.split(":", 1)[1].split("#")[0].strip()
            if old and not Path(old).is_absolute():
                return text.replace(f": {old}", f": {run_folder}")
            break
    return text


def _labels(hparams, run_folder):
    """The run's CTC labels (``CTCLabels``) and units: CommonVoice's saved phoneme set, or
    LibriSpeech's alphabet."""
    saved = Path(run_folder) / "save" / "label_encoder.txt"
    if saved.is_file():
        labels = CTCLabels(separator=" ")
        labels.load(saved)
        return labels, "phonemes"
    if "alphabet" not in hparams:
        raise ExportError(f"{run_folder}: neither save/label_encoder.txt nor an alphabet: not "
                          f"a LibriSpeech or CommonVoice CTC run")
    labels = CTCLabels()
    labels.insert_blank(index=hparams["blank_index"])
    labels.update_from_iterable(list(hparams["alphabet"]), sequence_input=False)
    return labels, "chars"


def load_run(run_folder):
    """A finished run as the recipe tested it: its hyperparameters, strategies set up on the
    backbone, the checkpoint with the lowest dev error loaded, and its labels.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder (``hyperparams.yaml``, ``save/``).

    Returns
    -------
    dict
        ``hparams`` (the run's, modules loaded), ``labels`` (``CTCLabels``), ``units``
        (``chars`` or ``phonemes``), ``key`` (``WER`` or ``PER``).

    Raises
    ------
    ExportError
        The folder is not a finished CTC run, or a strategy cannot be exported.
    """
    from s3brain.checkpoint import Checkpointer
    from s3brain.strategies import strategy_modules

    run_folder = Path(run_folder).resolve()
    yaml_file = run_folder / "hyperparams.yaml"
    if not yaml_file.is_file():
        raise ExportError(f"{run_folder}: no hyperparams.yaml: not a run's output folder")
    text = _fix_relative_output(yaml_file.read_text(encoding="utf-8"), run_folder)
    hparams = load_hyperpyyaml(text)
    if "ctc_lin" not in hparams.get("modules", {}):
        raise ExportError(f"{run_folder}: not a CTC run (no ctc_lin module); only LibriSpeech "
                          f"and CommonVoice runs are exported")
    strategies = list(hparams.get("strategies") or [])
    parts = _strategy_parts(strategies)
    labels, units = _labels(hparams, run_folder)
    key = "PER" if units == "phonemes" else "WER"
    ssl = hparams["ssl"]
    for strategy in strategies:
        if strategy in parts["deploy"] or strategy in (parts["forward"], parts["adapters"]):
            strategy.setup(ssl, hparams)
    modules = {"ssl": ssl, "model": hparams["model"], **strategy_modules(strategies)}
    checkpointer = Checkpointer(run_folder / "save", recoverables=modules)
    if checkpointer.find_checkpoint(min_key=key) is None:
        raise ExportError(f"{run_folder}: no checkpoint in save/: the run has not finished")
    checkpointer.recover_if_possible(min_key=key)
    for strategy in strategies:
        strategy.before_eval(ssl)  # as at the start of the recipe's test pass
    return {"hparams": hparams, "strategies": strategies, "parts": parts, "labels": labels,
            "units": units, "key": key, "folder": run_folder}


def deployed_backbone(run, output_all_hiddens=False, indent=8):
    """The deployed backbone of a loaded run (``load_run`` or ``load_classifier_run``): the
    strategies' ``deployable`` (masks folded, pruned units removed, LoRA merged) as a
    ``Backbone`` built from its transformers config, Houlsby adapters kept; and the yaml that
    builds it.

    Arguments
    ---------
    run : dict
        What ``load_run`` or ``load_classifier_run`` returned.
    output_all_hiddens : bool
        The backbone returns every hidden layer (the SUPERB heads read them all).
    indent : int
        The indentation of the yaml's arguments (the backbone is a key's value).

    Returns
    -------
    tuple
        ``(backbone, yaml text starting with "!new:")``; the backbone holds the run's weights.
    """
    from s3brain.strategies import deployable

    hparams, parts = run["hparams"], run["parts"]
    ssl = deployable(parts["deploy"], copy.deepcopy(hparams["ssl"]).cpu())
    hf = ssl.model
    config = hf.config.to_diff_dict()
    for drop in ("architectures", "auto_map", "transformers_version", "_name_or_path"):
        config.pop(drop, None)
    config = {"model_type": hf.config.model_type, **config}
    adapters = None
    if parts["adapters"] is not None:
        adapters = {"bottleneck": parts["adapters"].bottleneck,
                    "targets": list(parts["adapters"].targets)}
    rate = backbone_rate(hparams["ssl"])
    backbone_args = {"normalize_wav": bool(ssl.normalize_wav), "output_norm": bool(ssl.output_norm),
                     "sample_rate": rate, "adapters": adapters}
    if output_all_hiddens:
        backbone_args["output_all_hiddens"] = True
    text = ("!new:s3brain.inference.Backbone\n" + _yaml_block(backbone_args, indent)
            + " " * indent + "config:\n" + _yaml_block(config, indent + 4))
    backbone = Backbone(config, **backbone_args)
    backbone.model.load_state_dict(hf.state_dict())
    return backbone.cpu().eval(), text


def deployed_encoder(run):
    """The ``CTCEncoder`` of a loaded run (``load_run``) and the yaml that builds it.

    Arguments
    ---------
    run : dict
        What ``load_run`` returned.

    Returns
    -------
    tuple
        ``(encoder, yaml text of the encoder's key)``; the encoder holds the run's weights.
    """
    from s3brain.strategies import EarlyExit, TokenDropping

    hparams, parts = run["hparams"], run["parts"]
    backbone, backbone_yaml = deployed_backbone(run)
    head, ctc_lin = hparams["modules"]["head"], hparams["modules"]["ctc_lin"]
    lines = ["encoder: !new:s3brain.inference.CTCEncoder\n",
             f"    backbone: {backbone_yaml}",
             f"    head: {_layer_yaml(head, 8)}",
             f"    ctc_lin: {_layer_yaml(ctc_lin, 8)}",
             "    blank_index: !ref <blank_index>\n"]
    forward, extra = parts["forward"], {}
    if isinstance(forward, EarlyExit):
        heads = forward.heads
        lines += ["    exit_heads: !new:s3brain.early_exit.ExitHeads\n",
                  _yaml_block({"hidden_size": heads[0].in_features,
                               "outputs": heads[0].out_features, "layers": len(heads)}, 8),
                  _yaml_block({"exit_criterion": forward.criterion,
                               "exit_threshold": float(forward.threshold),
                               "exit_min_layer": int(forward.min_layer)}, 4)]
        extra["exit_heads"] = copy.deepcopy(heads)
        extra.update(exit_criterion=forward.criterion, exit_threshold=forward.threshold,
                     exit_min_layer=forward.min_layer)
    elif isinstance(forward, TokenDropping):
        dropper = forward.dropper
        lines += ["    token_dropping: !new:s3brain.salad.TokenDropping\n",
                  _yaml_block({"method": dropper.method, "skip_ratio": dropper.skip_ratio,
                               "drop_share": dropper.drop_share}, 8)]
        if dropper.detector is not None:
            lines += ["        detector: !new:s3brain.salad.SaladDetector\n",
                      _yaml_block(dict(dropper.detector.config), 12)]
        extra["token_dropping"] = copy.deepcopy(dropper)
    elif forward is not None:  # input downsampling
        down = forward.downsampler
        lines += ["    downsampler: !new:s3brain.downsampling.InputDownsampling\n",
                  _yaml_block({"kind": down.kind, "factor": down.factor,
                               "sample_rate": down.sample_rate, "kernel_size": down.kernel_size,
                               "upsample": down.do_upsample}, 8)]
        extra["downsampler"] = copy.deepcopy(down)
    encoder = CTCEncoder(backbone, copy.deepcopy(head), copy.deepcopy(ctc_lin),
                         blank_index=hparams["blank_index"], **extra)
    return encoder.cpu().eval(), "".join(lines)


def export_inference(run_folder, target=None):
    """Write the inference folder of a finished LibriSpeech or CommonVoice run, which
    ``EncoderASR.from_hparams(source=<folder>)`` loads.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.
    target : str or Path, optional
        Where to write; default ``<run_folder>/inference``.

    Returns
    -------
    pathlib.Path
        The folder written.

    Raises
    ------
    ExportError
        The run cannot be exported (one line says why).

    Example
    -------
    >>> export_inference("/nowhere")
    Traceback (most recent call last):
    ...
    s3brain.inference.ExportError: /nowhere: no hyperparams.yaml: not a run's output folder
    """
    run = load_run(run_folder)
    target = Path(target) if target is not None else run["folder"] / "inference"
    encoder, encoder_yaml = deployed_encoder(run)
    hparams = run["hparams"]
    rate = encoder.backbone.sampling_rate
    strategy = hparams.get("strategy", "?")
    separator = run["labels"].separator
    text = (
        f"# The deployed model of the s3brain run {run['folder']}\n"
        f"# (strategy {strategy}, {run['units']}), written by s3brain.inference.export_inference:\n"
        f"#   from speechbrain.inference.ASR import EncoderASR\n"
        f"#   asr = EncoderASR.from_hparams(source=\"{target}\", savedir=\"asr\")\n"
        f"#   asr.transcribe_file(\"speech.wav\")\n\n"
        f"sample_rate: {rate}\nblank_index: {hparams['blank_index']}\nunits: {run['units']}\n\n"
        f"{encoder_yaml}\n"
        f"tokenizer: !new:s3brain.inference.CTCLabels\n    separator: {separator!r}\n\n"
        f"decoding_function: !name:speechbrain.decoders.ctc_greedy_decode\n"
        f"    blank_id: !ref <blank_index>\n\n"
        f"# any rate and channel count, read as the recipe reads audio\n"
        f"audio_normalizer: !new:s3brain.inference.AudioNormalizer\n"
        f"    sample_rate: !ref <sample_rate>\n\n"
        f"modules:\n    encoder: !ref <encoder>\n\n"
        f"pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        f"    loadables:\n        encoder: !ref <encoder>\n        tokenizer: !ref <tokenizer>\n")
    target.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), target / ENCODER_FILE)
    run["labels"].save(target / TOKENIZER_FILE)
    (target / "hyperparams.yaml").write_text(text, encoding="utf-8")
    logger.info("Inference folder written: %s", target)
    return target


class TaskHead(nn.ModuleList):
    """A task's head and CTC layer as one module, in the layout of a run's ``model``
    (``ModuleList([head, ctc_lin])``), whose weights an S3-Router task file holds.

    Arguments
    ---------
    head : torch.nn.Module
        The recipe's head.
    ctc_lin : torch.nn.Module
        The CTC output layer.

    Example
    -------
    >>> TaskHead(nn.Identity(), nn.Linear(4, 3))(torch.zeros(1, 2, 4)).shape
    torch.Size([1, 2, 3])
    """

    def __init__(self, head, ctc_lin):
        super().__init__([head, ctc_lin])

    def forward(self, features):
        """CTC log-probabilities of backbone features.

        Arguments
        ---------
        features : torch.Tensor
            ``[batch, frames, hidden]``.

        Returns
        -------
        torch.Tensor
            ``[batch, frames, outputs]``.
        """
        return self[1](self[0](features)).log_softmax(-1)


@register_checkpoint_hooks
class TaskFile:
    """Where the ``Pretrainer`` put a task's mask file (``task_<name>.ckpt``, a
    ``s3brain.mask_bank`` safetensors file): ``S3RouterASR`` loads it from ``path``.

    Example
    -------
    >>> TaskFile().path is None
    True
    """

    def __init__(self):
        self.path = None

    @mark_as_transfer
    def found(self, path):
        """Record the fetched file.

        Arguments
        ---------
        path : str or Path
            The local file.
        """
        self.path = str(path)


def export_after_run(run_folder):
    """What a recipe calls at the end of a run: ``export_run`` (``export_inference``, or
    ``export_classifier`` for a SUPERB run) into ``<run_folder>/inference``, or a logged line
    saying why this run has no inference folder (a strategy without an export yet); the run's
    results are never lost to it.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.

    Returns
    -------
    pathlib.Path or None
        The folder written, or None.

    Example
    -------
    >>> export_after_run("/nowhere") is None
    True
    """
    try:
        folder = export_run(run_folder)
    except ExportError as err:
        logger.warning("No inference folder: %s", err)
        return None
    return folder


def is_classifier_run(run_folder):
    """Whether a run folder is a SUPERB run (a label encoder per target,
    ``save/label_encoder_<target>.txt``), exported by ``export_classifier``.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.

    Returns
    -------
    bool

    Example
    -------
    >>> is_classifier_run("/nowhere")
    False
    """
    return any((Path(run_folder) / "save").glob("label_encoder_*.txt"))


def load_classifier_run(run_folder):
    """A finished SUPERB run as the recipe tested it: its hyperparameters, the head rebuilt
    from the best checkpoint (lowest dev ``error``, 100 - accuracy, as the recipe's
    ``evaluate(min_key="error")``), strategies set up on the backbone, the weights loaded, and
    the label encoders.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder (``hyperparams.yaml``, ``save/``).

    Returns
    -------
    dict
        ``hparams`` (``model`` and ``modules["head"]`` the loaded head), ``strategies``,
        ``parts``, ``head`` (``s3brain.utterance.UtteranceHead``), ``targets`` (in the
        recipe's order), ``encoders`` (``{target: CategoricalEncoder}``), ``folder``.

    Raises
    ------
    ExportError
        The folder is not a finished SUPERB run, or a strategy cannot be exported.
    """
    from speechbrain.dataio.encoder import CategoricalEncoder

    from s3brain.checkpoint import Checkpointer
    from s3brain.strategies import strategy_modules
    from s3brain.utterance import UtteranceHead

    run_folder = Path(run_folder).resolve()
    yaml_file = run_folder / "hyperparams.yaml"
    if not yaml_file.is_file():
        raise ExportError(f"{run_folder}: no hyperparams.yaml: not a run's output folder")
    if not is_classifier_run(run_folder):
        raise ExportError(f"{run_folder}: no save/label_encoder_<target>.txt: not a SUPERB run")
    best = Checkpointer(run_folder / "save").find_checkpoint(min_key="error")
    if best is None or "model" not in best.paramfiles:
        raise ExportError(f"{run_folder}: no checkpoint with a head in save/: the run has not "
                          f"finished")
    text = _fix_relative_output(yaml_file.read_text(encoding="utf-8"), run_folder)
    hparams = load_hyperpyyaml(text)
    strategies = list(hparams.get("strategies") or [])
    parts = _strategy_parts(strategies)
    if parts["forward"] is not None:
        raise ExportError(f"strategy {type(parts['forward']).__name__} changes the backbone's "
                          f"forward: a SUPERB run with it has no classifier export yet")
    # the head as the recipe built it (build_head), sized by the checkpoint's tensors
    state = torch.load(best.paramfiles["model"], map_location="cpu", weights_only=True)
    targets = [k.split(".")[1] for k in state if k.startswith("classifiers.")
               and k.endswith(".weight")]
    classes = {t: state[f"classifiers.{t}.weight"].shape[0] for t in targets}
    projection, input_size = state["projection.weight"].shape
    head = UtteranceHead(state["layer_sum.weights"].numel(), input_size, classes, projection)
    encoders = {}
    for t in targets:
        encoders[t] = CategoricalEncoder()
        encoders[t].load(run_folder / "save" / f"label_encoder_{t}.txt")
        encoders[t].expect_len(classes[t])
    hparams["model"] = hparams["modules"]["head"] = head
    ssl = hparams["ssl"]
    for strategy in strategies:
        if strategy in parts["deploy"] or strategy is parts["adapters"]:
            strategy.setup(ssl, hparams)
    modules = {"ssl": ssl, "model": head, **strategy_modules(strategies)}
    Checkpointer(run_folder / "save", recoverables=modules).recover_if_possible(min_key="error")
    for strategy in strategies:
        strategy.before_eval(ssl)  # as at the start of the recipe's test pass
    return {"hparams": hparams, "strategies": strategies, "parts": parts, "head": head,
            "targets": targets, "encoders": encoders, "folder": run_folder}


@register_checkpoint_hooks
class UtteranceModel(nn.Module):
    """The deployed model of a SUPERB run, waveform to logits per target: the deployed
    backbone returning every hidden layer, then the recipe's ``UtteranceHead`` (weighted layer
    sum, projection, mean pooling over the real frames, a linear classifier per target).

    Arguments
    ---------
    backbone : Backbone
        The deployed backbone, with ``output_all_hiddens``.
    head : s3brain.utterance.UtteranceHead
        The run's head.

    Example
    -------
    >>> from s3brain.utterance import UtteranceHead
    >>> backbone = Backbone({"model_type": "wav2vec2", "hidden_size": 32,
    ...     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
    ...     "conv_dim": [8], "conv_stride": [5], "conv_kernel": [10],
    ...     "num_feat_extract_layers": 1, "num_conv_pos_embedding_groups": 2},
    ...     output_all_hiddens=True)
    >>> model = UtteranceModel(backbone, UtteranceHead(2, 32, {"label": 3}, 8)).eval()
    >>> model(torch.randn(2, 400), torch.tensor([1.0, 0.5]))["label"].shape
    torch.Size([2, 3])
    """

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, wavs, wav_lens=None):
        """Logits per target of a batch of waveforms at the backbone's rate.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor, optional
            Relative lengths (all 1.0 when None).

        Returns
        -------
        dict
            ``{target: [batch, classes]}``.
        """
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        return self.head(self.backbone(wavs, wav_lens), wav_lens)

    @mark_as_transfer
    @mark_as_loader
    def load_strict(self, path, end_of_epoch=False):
        """Load ``classifier.ckpt``, every tensor required.

        Arguments
        ---------
        path : str or Path
            The file.
        end_of_epoch : bool
            Unused (the checkpoint loader's signature).
        """
        del end_of_epoch
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def export_classifier(run_folder, target=None):
    """Write the inference folder of a finished SUPERB run (``recipes/SUPERB/<task>``):
    ``hyperparams.yaml``, ``classifier.ckpt`` (the deployed backbone and the head),
    ``label_encoder_<target>.ckpt`` per target, and the ``custom.py`` through which
    ``foreign_class(source=<folder>, pymodule_file="custom.py", classname="UtteranceClassifier")``
    loads ``UtteranceClassifier``.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.
    target : str or Path, optional
        Where to write; default ``<run_folder>/inference``.

    Returns
    -------
    pathlib.Path
        The folder written.

    Raises
    ------
    ExportError
        The run cannot be exported (one line says why).

    Example
    -------
    >>> export_classifier("/nowhere")
    Traceback (most recent call last):
    ...
    s3brain.inference.ExportError: /nowhere: no hyperparams.yaml: not a run's output folder
    """
    run = load_classifier_run(run_folder)
    target = Path(target) if target is not None else run["folder"] / "inference"
    backbone, backbone_yaml = deployed_backbone(run, output_all_hiddens=True)
    head = copy.deepcopy(run["head"]).cpu().eval()
    model = UtteranceModel(backbone, head)
    hparams, targets = run["hparams"], run["targets"]
    head_args = {"layers": head.layer_sum.weights.numel(),
                 "input_size": head.projection.in_features,
                 "classes": {t: head.classifiers[t].out_features for t in targets},
                 "projection": head.projection.out_features}
    text = (
        f"# The deployed model of the s3brain SUPERB run {run['folder']}\n"
        f"# (task {hparams.get('task', '?')}, strategy {hparams.get('strategy', '?')}), "
        f"written by s3brain.inference.export_classifier:\n"
        f"#   from speechbrain.inference.interfaces import foreign_class\n"
        f"#   classifier = foreign_class(source=\"{target}\", pymodule_file=\"custom.py\",\n"
        f"#       classname=\"UtteranceClassifier\", savedir=\"classifier\")\n"
        f"#   classifier.classify_file(\"speech.wav\")\n\n"
        f"sample_rate: {backbone.sampling_rate}\n\n"
        f"classifier: !new:s3brain.inference.UtteranceModel\n"
        f"    backbone: {backbone_yaml}"
        f"    head: !new:s3brain.utterance.UtteranceHead\n{_yaml_block(head_args, 8)}\n"
        + "".join(f"label_encoder_{t}: !new:speechbrain.dataio.encoder.CategoricalEncoder\n"
                  for t in targets)
        + "label_encoders:\n"
        + "".join(f"    {t}: !ref <label_encoder_{t}>\n" for t in targets)
        + "\n# any rate and channel count, read as the recipe reads audio\n"
          "audio_normalizer: !new:s3brain.inference.AudioNormalizer\n"
          "    sample_rate: !ref <sample_rate>\n\n"
          "modules:\n    classifier: !ref <classifier>\n\n"
          "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
          "    loadables:\n        classifier: !ref <classifier>\n"
        + "".join(f"        label_encoder_{t}: !ref <label_encoder_{t}>\n" for t in targets))
    target.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), target / CLASSIFIER_FILE)
    for t in targets:
        run["encoders"][t].save(target / f"label_encoder_{t}.ckpt")
    (target / "custom.py").write_text(
        '"""The interface of this inference folder, for speechbrain.inference.interfaces.'
        'foreign_class (pymodule_file="custom.py", classname="UtteranceClassifier")."""\n\n'
        "from s3brain.inference import UtteranceClassifier  # noqa: F401\n", encoding="utf-8")
    (target / "hyperparams.yaml").write_text(text, encoding="utf-8")
    logger.info("Inference folder written: %s", target)
    return target


class UtteranceClassifier(Pretrained):
    """A SUPERB run's classifier through SpeechBrain's inference interface: a folder written by
    ``export_classifier`` loads with ``foreign_class(source, pymodule_file="custom.py",
    classname="UtteranceClassifier")``.

    ``classify_file(path)`` gives ``{target: label}`` (``{"label": ...}`` for keyword
    spotting, speaker identification and prosody; ``action``, ``object`` and ``location`` for
    intent); ``classify_batch(wavs, wav_lens)`` one such dict per utterance, with the
    log-probabilities. SpeechBrain's ``EncoderClassifier`` does not fit: it needs features, a
    normalisation, an embedding model and one classifier with one label encoder, where the
    SUPERB head reads every hidden layer of the backbone and has a classifier per target.

    Arguments
    ---------
    *args : tuple
        ``Pretrained``'s (modules, hparams, run options).
    **kwargs : dict
        ``Pretrained``'s.

    Example
    -------
    >>> UtteranceClassifier.MODULES_NEEDED
    ['classifier']
    """

    HPARAMS_NEEDED = ["label_encoders", "sample_rate"]
    MODULES_NEEDED = ["classifier"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        classifiers = self.mods.classifier.head.classifiers
        for name, encoder in self.hparams.label_encoders.items():
            encoder.expect_len(classifiers[name].out_features)  # a head fits its labels

    @property
    def targets(self):
        """The targets, in the recipe's order."""
        return list(self.hparams.label_encoders)

    def encode_batch(self, wavs, wav_lens=None):
        """Log-probabilities per target of a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` at the backbone's rate.
        wav_lens : torch.Tensor, optional
            Relative lengths (all 1.0 when None).

        Returns
        -------
        dict
            ``{target: [batch, classes]}``.
        """
        wavs = wavs.float().to(self.device)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        with torch.no_grad():
            logits = self.mods.classifier(wavs, wav_lens.to(self.device))
        return {t: logits[t].log_softmax(-1) for t in self.targets}

    def classify_batch(self, wavs, wav_lens=None):
        """The most likely label of each target for each utterance of a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` at the backbone's rate.
        wav_lens : torch.Tensor, optional
            Relative lengths (all 1.0 when None).

        Returns
        -------
        tuple
            ``(labels, log-probabilities)``: ``[{target: label}]``, one dict per utterance in
            the batch's order, and ``{target: [batch, classes]}``.
        """
        log_probs = self.encode_batch(wavs, wav_lens)
        ids = {t: lp.argmax(-1).tolist() for t, lp in log_probs.items()}
        encoders = self.hparams.label_encoders
        labels = [{t: encoders[t].ind2lab[ids[t][i]] for t in self.targets}
                  for i in range(wavs.shape[0])]
        return labels, log_probs

    def classify_file(self, path):
        """Classify one file (any rate, container and channels, read as the recipes read it).

        Arguments
        ---------
        path : str or Path
            The audio file.

        Returns
        -------
        dict
            ``{target: label}``.
        """
        from s3brain.audio import read_audio

        signal = read_audio(str(path), int(self.hparams.sample_rate))
        labels, _ = self.classify_batch(signal[None], torch.ones(1))
        return labels[0]

    def forward(self, wavs, wav_lens=None):
        """Log-probabilities per target (see ``encode_batch``).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor, optional
            Relative lengths.

        Returns
        -------
        dict
        """
        return self.encode_batch(wavs, wav_lens)


def export_run(run_folder, target=None):
    """Write a finished run's inference folder: ``export_classifier`` for a SUPERB run,
    ``export_inference`` for a LibriSpeech or CommonVoice CTC run.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.
    target : str or Path, optional
        Where to write; default ``<run_folder>/inference``.

    Returns
    -------
    pathlib.Path
        The folder written.

    Example
    -------
    >>> export_run("/nowhere")
    Traceback (most recent call last):
    ...
    s3brain.inference.ExportError: /nowhere: no hyperparams.yaml: not a run's output folder
    """
    if is_classifier_run(run_folder):
        return export_classifier(run_folder, target)
    return export_inference(run_folder, target)


def _labels_beside(path):
    """The labels of the run a mask file was written in (``save/label_encoder.txt`` beside
    it: phonemes), or None (the bank's default labels)."""
    saved = Path(path).parent / "save" / "label_encoder.txt"
    if not saved.is_file():
        return None
    labels = CTCLabels(separator=" ")
    labels.load(saved)
    return labels


class S3RouterASR(Pretrained):
    """One frozen backbone serving any number of S3-Router tasks (a mask file and a head
    each, ``s3brain.mask_bank.MaskBank``), through SpeechBrain's inference interface: a folder
    written by ``export_mask_bank`` loads with
    ``foreign_class(source, pymodule_file="custom.py", classname="S3RouterASR")``.

    ``add_task(path, name)`` adds a task file, ``set_task(name)`` switches (only the boolean
    masks are copied; the backbone is never reloaded), ``transcribe_file(path, task)`` and
    ``transcribe_batch(wavs, wav_lens, tasks)``, whose utterances may each belong to another
    task: grouped by task, each group run after a switch, the transcripts returned in the
    batch's order.

    Arguments
    ---------
    *args : tuple
        ``Pretrained``'s (modules, hparams, run options).
    **kwargs : dict
        ``Pretrained``'s.

    Example
    -------
    >>> S3RouterASR.MODULES_NEEDED
    ['backbone']
    """

    HPARAMS_NEEDED = ["tasks", "decoding_function", "sample_rate"]
    MODULES_NEEDED = ["backbone"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from s3brain.mask_bank import MaskBank

        self.bank = MaskBank(self.mods.backbone.model)
        self.labels, self.task_heads = {}, nn.ModuleDict()
        for name, task in self.hparams.tasks.items():
            self.add_task(task["mask"].path, name, head=task["head"], labels=task["labels"])
        if self.hparams.tasks:
            self.set_task(next(iter(self.hparams.tasks)))

    @property
    def tasks(self):
        """The names of the loaded tasks, in loading order."""
        return self.bank.adapters

    @property
    def active_task(self):
        """The task whose masks are in place."""
        return self.bank.active_adapter

    def add_task(self, path, name, head=None, labels=None):
        """Add a task from its mask file (``task_mask.safetensors`` of an S3-Router run).

        Arguments
        ---------
        path : str or Path
            The mask file; it must have been learned on this backbone.
        name : str
            The task's name.
        head : torch.nn.Module, optional
            A ``TaskHead`` of the task's head architecture (default: a copy of the first
            task's), which receives the file's head weights.
        labels : CTCLabels, optional
            The task's labels (default: the labels of the run beside the file, CommonVoice's
            phonemes, else the first task's).

        Returns
        -------
        str
            ``name``.
        """
        if name in self.labels:
            raise ValueError(f"a task named {name!r} is already loaded")
        if head is None:
            if not self.task_heads:
                raise ValueError("the first task needs its head")
            head = copy.deepcopy(next(iter(self.task_heads.values())))
        labels = labels or _labels_beside(path) or next(iter(self.labels.values()))
        head = head.to(self.device).eval().requires_grad_(False)
        self.bank.load_adapter(path, name, head=head)
        self.task_heads[name], self.labels[name] = head, labels
        return name

    def set_task(self, name):
        """Put a task's masks in place.

        Arguments
        ---------
        name : str
            A loaded task.

        Returns
        -------
        TaskHead
            The task's head.
        """
        return self.bank.set_adapter(name)

    def encode_batch(self, wavs, wav_lens):
        """CTC log-probabilities of a batch under the active task.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` at the backbone's rate.
        wav_lens : torch.Tensor
            Relative lengths.

        Returns
        -------
        torch.Tensor
            ``[batch, frames, outputs]``.
        """
        wavs, wav_lens = wavs.float().to(self.device), wav_lens.to(self.device)
        return self.task_heads[self.active_task](self.mods.backbone(wavs, wav_lens))

    def _transcribe_group(self, wavs, wav_lens):
        """Transcripts and token ids of a batch of the active task."""
        log_probs = self.encode_batch(wavs, wav_lens)
        tokens = self.hparams.decoding_function(log_probs, wav_lens.to(self.device))
        labels = self.labels[self.active_task]
        return ["".join(labels.decode_ndim(t)) for t in tokens], tokens

    def transcribe_batch(self, wavs, wav_lens, tasks=None):
        """Transcribe a batch whose utterances may belong to different tasks.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` at the backbone's rate.
        wav_lens : torch.Tensor
            Relative lengths.
        tasks : list of str, optional
            Each utterance's task (default: the active task for all).

        Returns
        -------
        tuple
            ``(transcripts, token ids)``, in the batch's order; the active task is left as
            it was.
        """
        tasks = list(tasks) if tasks is not None else [self.active_task] * len(wavs)
        if len(tasks) != len(wavs):
            raise ValueError(f"{len(tasks)} tasks for {len(wavs)} utterances")
        unknown = sorted(set(tasks) - set(self.tasks))
        if unknown:
            raise KeyError(f"tasks {unknown} are not loaded; loaded: {self.tasks}")
        samples = (wav_lens * wavs.shape[1]).round().long()
        words, tokens = [None] * len(wavs), [None] * len(wavs)
        active = self.active_task
        try:
            with torch.no_grad():
                for task in dict.fromkeys(tasks):  # each task once, in order of appearance
                    rows = [i for i, t in enumerate(tasks) if t == task]
                    longest = int(samples[rows].max())
                    self.set_task(task)
                    group_words, group_tokens = self._transcribe_group(
                        wavs[rows, :longest], samples[rows].float() / longest)
                    for i, w, t in zip(rows, group_words, group_tokens):
                        words[i], tokens[i] = w, t
        finally:
            if active is not None:
                self.set_task(active)
        return words, tokens

    def transcribe_file(self, path, task=None):
        """Transcribe one file (any rate and channels) with a task.

        Arguments
        ---------
        path : str
            The audio file.
        task : str, optional
            The task (default: the active one).

        Returns
        -------
        str
        """
        from s3brain.audio import read_audio

        signal = read_audio(path, int(self.hparams.sample_rate))
        words, _ = self.transcribe_batch(signal[None], torch.ones(1),
                                         [task or self.active_task])
        return words[0]

    def forward(self, wavs, wav_lens):
        """CTC log-probabilities under the active task (see ``encode_batch``).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor
            Relative lengths.

        Returns
        -------
        torch.Tensor
        """
        return self.encode_batch(wavs, wav_lens)


def _task_name(run, taken):
    """A task's name from its run: the language of a CommonVoice run, else the strategy's
    folder name, made unique."""
    hparams = run["hparams"]
    base = str(hparams.get("language") or run["folder"].name)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


def export_mask_bank(run_folders, target, names=None):
    """Write a mask bank folder serving the S3-Router runs ``run_folders`` (same backbone):
    the dense pretrained backbone once, each run's mask file, head and labels, and the
    ``custom.py`` through which ``foreign_class`` loads ``S3RouterASR``.

    Arguments
    ---------
    run_folders : list of str or Path
        Finished S3-Router runs (``hparams/s3router.yaml`` of LibriSpeech or CommonVoice).
    target : str or Path
        The folder to write.
    names : list of str, optional
        The tasks' names (default: CommonVoice's language, else the run folder's name).

    Returns
    -------
    pathlib.Path
        ``target``.

    Raises
    ------
    ExportError
        A run without S3-Router masks, or one learned on another backbone.
    """
    from s3brain.mask_bank import read_mask_file, remove_masks
    from s3brain.strategies import Masks

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tasks, fingerprint, backbone_yaml = [], None, None
    for i, folder in enumerate(run_folders):
        run = load_run(folder)
        if not any(isinstance(s, Masks) for s in run["strategies"]) or not all(
                s.keeps_backbone_weights for s in run["strategies"]):
            raise ExportError(f"{folder}: not an S3-Router run (masks over the frozen "
                              f"backbone): a mask bank serves only those")
        mask_file = run["folder"] / Masks.file_name
        if not mask_file.is_file():
            raise ExportError(f"{folder}: no {Masks.file_name}: the run has not finished")
        meta = read_mask_file(mask_file)[2]
        if fingerprint not in (None, meta["backbone_fingerprint"]):
            raise ExportError(f"{folder}: its masks were learned on another backbone than "
                              f"{run_folders[0]}'s")
        fingerprint = meta["backbone_fingerprint"]
        name = names[i] if names else _task_name(run, [t[0] for t in tasks])
        hparams = run["hparams"]
        if backbone_yaml is None:
            ssl = remove_masks(copy.deepcopy(hparams["ssl"]).cpu())
            config = {"model_type": ssl.model.config.model_type,
                      **{k: v for k, v in ssl.model.config.to_diff_dict().items()
                         if k not in ("architectures", "auto_map", "transformers_version",
                                      "_name_or_path")}}
            args = {"normalize_wav": bool(ssl.normalize_wav),
                    "output_norm": bool(ssl.output_norm),
                    "sample_rate": backbone_rate(hparams["ssl"])}
            backbone = Backbone(config, **args)
            backbone.model.load_state_dict(ssl.model.state_dict())
            torch.save(backbone.state_dict(), target / "backbone.ckpt")
            backbone_yaml = ("backbone: !new:s3brain.inference.Backbone\n" + _yaml_block(args, 4)
                             + "    config:\n" + _yaml_block(config, 8))
            rate, blank = args["sample_rate"], hparams["blank_index"]
        (target / f"task_{name}.ckpt").write_bytes(mask_file.read_bytes())
        run["labels"].save(target / f"labels_{name}.ckpt")
        head_yaml = (f"task_{name}_head: !new:s3brain.inference.TaskHead\n"
                     f"    head: {_layer_yaml(hparams['modules']['head'], 8)}"
                     f"    ctc_lin: {_layer_yaml(hparams['modules']['ctc_lin'], 8)}"
                     f"task_{name}: !new:s3brain.inference.TaskFile\n"
                     f"labels_{name}: !new:s3brain.inference.CTCLabels\n"
                     f"    separator: {run['labels'].separator!r}\n")
        tasks.append((name, head_yaml))
    (target / "custom.py").write_text(
        '"""The interface of this mask bank, for speechbrain.inference.interfaces.foreign_class '
        '(pymodule_file="custom.py", classname="S3RouterASR")."""\n\n'
        "from s3brain.inference import S3RouterASR  # noqa: F401\n", encoding="utf-8")
    text = (
        "# A mask bank written by s3brain.inference.export_mask_bank: one backbone, one mask\n"
        "# file and head per task.\n"
        "#   from speechbrain.inference.interfaces import foreign_class\n"
        f"#   asr = foreign_class(source=\"{target}\", pymodule_file=\"custom.py\",\n"
        "#                       classname=\"S3RouterASR\", savedir=\"bank\")\n"
        f"#   asr.transcribe_file(\"speech.wav\", task=\"{tasks[0][0]}\")\n\n"
        f"sample_rate: {rate}\nblank_index: {blank}\n\n{backbone_yaml}\n"
        + "".join(head for _, head in tasks)
        + "\ntasks:\n"
        + "".join(f"    {name}:\n        mask: !ref <task_{name}>\n"
                  f"        head: !ref <task_{name}_head>\n"
                  f"        labels: !ref <labels_{name}>\n" for name, _ in tasks)
        + "\ndecoding_function: !name:speechbrain.decoders.ctc_greedy_decode\n"
          "    blank_id: !ref <blank_index>\n\n"
          "audio_normalizer: !new:s3brain.inference.AudioNormalizer\n"
          "    sample_rate: !ref <sample_rate>\n\n"
          "modules:\n    backbone: !ref <backbone>\n\n"
          "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
          "    loadables:\n        backbone: !ref <backbone>\n"
        + "".join(f"        task_{name}: !ref <task_{name}>\n"
                  f"        labels_{name}: !ref <labels_{name}>\n" for name, _ in tasks))
    (target / "hyperparams.yaml").write_text(text, encoding="utf-8")
    return target


def main(argv=None):
    """``python -m s3brain.inference <run folder> [--target DIR]``: export one run's inference
    folder; ``python -m s3brain.inference --mask-bank DIR <S3-Router run>...``: a mask bank.
    Prints the folder written.

    Arguments
    ---------
    argv : list of str, optional
        The command line after the program name.

    Returns
    -------
    int
        The exit status (2: the run cannot be exported, said in one line).
    """
    parser = argparse.ArgumentParser(
        prog="python -m s3brain.inference",
        description="Write the SpeechBrain inference folder of a finished run (EncoderASR; "
                    "UtteranceClassifier for a SUPERB run), or the mask bank (S3RouterASR) of "
                    "several S3-Router runs.")
    parser.add_argument("run_folders", nargs="+", help="the run's output folder")
    parser.add_argument("--target", default=None, help="default: <run_folder>/inference")
    parser.add_argument("--mask-bank", default=None, metavar="DIR",
                        help="write one mask bank serving every run given, in DIR")
    parser.add_argument("--names", nargs="+", default=None, help="the mask bank's task names")
    args = parser.parse_args(argv)
    try:
        if args.mask_bank:
            print(export_mask_bank(args.run_folders, args.mask_bank, args.names))
        elif len(args.run_folders) > 1:
            raise ExportError("one run at a time (or --mask-bank DIR for several S3-Router runs)")
        else:
            print(export_run(args.run_folders[0], args.target))
    except (ExportError, FileNotFoundError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
