"""The modules an inference folder's ``hyperparams.yaml`` builds: the deployed backbone
(``Backbone``, from its transformers config), the CTC model (``CTCEncoder``: backbone, head, CTC
layer and the forward a strategy changes), the utterance-level model (``UtteranceModel``), a
task's head (``TaskHead``), the labels (``CTCLabels``) and the audio normaliser.

Example
-------
>>> labels = CTCLabels(separator=" ")
>>> labels.insert_blank(index=0)
>>> labels.update_from_iterable(["a", "b"], sequence_input=False)
>>> labels.decode_ndim([1, 2, 7])
['a b']
"""

import math

import torch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_transfer,
    register_checkpoint_hooks,
)
from torch import nn

from s3brain.backbone import shrunk_modeling
from s3brain.backbone.audio import resample, to_mono
from s3brain.backbone.families import transformer_blocks
from s3brain.backbone.wrapper import normalized_input, output_normalized, wrapper_forward
from s3brain.strategies.adapters import HoulsbyAdapters as Adapters
from s3brain.strategies.early_exit import early_exit
from s3brain.strategies.token_dropping import encode_with_dropping

#: What a folder written by ``export_inference`` holds besides ``hyperparams.yaml``.
ENCODER_FILE, TOKENIZER_FILE = "encoder.ckpt", "tokenizer.ckpt"


#: What a folder written by ``export_classifier`` holds besides ``hyperparams.yaml``,
#: ``custom.py`` and a ``label_encoder_<target>.ckpt`` per target.
CLASSIFIER_FILE = "classifier.ckpt"


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
    (``s3brain.backbone.audio.read_audio``): the channels averaged, then resampled to the backbone's
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
        ``s3brain.backbone.shrunk_modeling``.
    normalize_wav : bool
        The wrapper's input normalisation.
    output_norm : bool
        The wrapper's output layer norm.
    sample_rate : int
        The rate the model reads.
    adapters : dict, optional
        ``{"bottleneck": int, "targets": [...]}``: Houlsby adapters inside the model
        (``s3brain.strategies.adapters.HoulsbyAdapters``), which a deployed model keeps.
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


        config = dict(config)
        model_type = config.pop("model_type")
        if config.get("layer_intermediate_sizes") is not None:
            config_name, model_name = shrunk_modeling.CLASSES[model_type]
            config = getattr(shrunk_modeling, config_name)(**config)
            self.model = getattr(shrunk_modeling, model_name)(config)
        else:
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **config))
        if adapters:

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
    downsampler : s3brain.strategies.downsampling.InputDownsampling, optional
        Input downsampling before the backbone.
    token_dropping : s3brain.strategies.token_dropping.TokenDropper, optional
        CNN frames dropped before the transformer (SALAD with its detector, or uniform).
    exit_heads : s3brain.strategies.early_exit.ExitHeads, optional
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
    ``s3brain.strategies.s3router.mask_bank`` safetensors file): ``S3RouterASR`` loads it from ``path``.

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


@register_checkpoint_hooks
class UtteranceModel(nn.Module):
    """The deployed model of a SUPERB run, waveform to logits per target: the deployed
    backbone returning every hidden layer, then the recipe's ``UtteranceHead`` (weighted layer
    sum, projection, mean pooling over the real frames, a linear classifier per target).

    Arguments
    ---------
    backbone : Backbone
        The deployed backbone, with ``output_all_hiddens``.
    head : s3brain.lobes.heads.UtteranceHead
        The run's head.

    Example
    -------
    >>> from s3brain.lobes.heads import UtteranceHead
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


def token_labels(token_ids, label_encoder, units="chars"):
    """CTC token ids -> words (characters joined, split at spaces) or a phoneme list. Outputs
    beyond the label set (a head wider than the phoneme set) are dropped.

    Arguments
    ---------
    token_ids : list of int
        A decoded sequence (blanks and repeats removed).
    label_encoder : speechbrain.dataio.encoder.CTCTextEncoder
        The labels.
    units : str
        ``chars`` or ``phonemes``.

    Returns
    -------
    list of str
        Words or phonemes.

    Example
    -------
    >>> import speechbrain as sb
    >>> enc = sb.dataio.encoder.CTCTextEncoder()
    >>> enc.insert_blank(index=0); enc.update_from_iterable(list("ab "), sequence_input=False)
    >>> token_labels([1, 3, 2, 9], enc)
    ['a', 'b']
    """
    known = label_encoder.ind2lab
    labels = label_encoder.decode_ndim([i for i in token_ids if i in known])
    return "".join(labels).split() if units == "chars" else list(labels)
