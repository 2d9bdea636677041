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


import torch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_transfer,
    register_checkpoint_hooks,
)
from torch import nn
from transformers import AutoConfig, AutoModel

from s3brain.backbone import shrunk_modeling
from s3brain.backbone.audio import resample, to_mono
from s3brain.backbone.wrapper import wrapper_forward
from s3brain.strategies.adapters import HoulsbyAdapters
from s3brain.strategies.downsampling import DownsampledCTC
from s3brain.strategies.early_exit import ExitCTC
from s3brain.strategies.token_dropping import DroppedFramesCTC
from s3brain.utils.padding import blank_padded  # noqa: F401 (kept importable here)

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
        self._args = {"config": dict(config), "normalize_wav": bool(normalize_wav),
                      "output_norm": bool(output_norm), "sample_rate": int(sample_rate),
                      "adapters": adapters}
        if output_all_hiddens:
            self._args["output_all_hiddens"] = True
        config = dict(config)
        model_type = config.pop("model_type")
        if config.get("layer_intermediate_sizes") is not None:
            config_name, model_name = shrunk_modeling.CLASSES[model_type]
            config = getattr(shrunk_modeling, config_name)(**config)
            self.model = getattr(shrunk_modeling, model_name)(config)
        else:
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **config))
        if adapters:
            HoulsbyAdapters(self.model, bottleneck=adapters["bottleneck"],
            targets=adapters["targets"])
        self.normalize_wav, self.output_norm = bool(normalize_wav), bool(output_norm)
        self.sampling_rate = int(sample_rate)
        self.output_all_hiddens = bool(output_all_hiddens)

    @classmethod
    def of(cls, ssl, **args):
        """The ``Backbone`` that rebuilds a deployed backbone wrapper's transformers model from
        its config, with its weights.

        Arguments
        ---------
        ssl : torch.nn.Module
            A deployed backbone wrapper (``model``, ``normalize_wav``, ``output_norm``).
        **args
            ``sample_rate``, ``adapters``, ``output_all_hiddens`` (see the class).

        Returns
        -------
        Backbone
            In eval mode, on the CPU.
        """
        hf = ssl.model
        config = {"model_type": hf.config.model_type,
                  **{k: v for k, v in hf.config.to_diff_dict().items()
                     if k not in ("architectures", "auto_map", "transformers_version",
                                  "_name_or_path")}}
        backbone = cls(config, normalize_wav=bool(ssl.normalize_wav),
                       output_norm=bool(ssl.output_norm), **args)
        state = hf.state_dict()
        if "masked_spec_embed" not in backbone.model.state_dict():
            # only training's time masking reads it; a config with the masking off (the
            # recipes' config_overrides) builds the model without it
            state.pop("masked_spec_embed", None)
        backbone.model.load_state_dict(state)
        return backbone.cpu().eval()

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return dict(self._args)

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




@register_checkpoint_hooks
class CTCEncoder(nn.Module):
    """The deployed CTC model of a run, waveform to log-probabilities: the ``encoder`` of an
    ``EncoderASR`` inference folder.

    A strategy that changes the forward ships it as ``encode`` (its ``Strategy.export``): a
    module whose ``forward(encoder, wavs, wav_lens)`` gives the log-probabilities from this
    encoder's ``backbone``, ``head``, ``ctc_lin`` and ``blank_index`` (input downsampling,
    token dropping, early exit, token merging, adaptive skip); without one, the backbone's
    features go through the head. Folders exported before ``encode`` existed name the part by
    one of ``downsampler``, ``token_dropping`` or ``exit_heads`` (with ``exit_criterion``,
    ``exit_threshold``, ``exit_min_layer``): built into the same parts, their ``encoder.ckpt``
    loads as it was written.

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
    encode : torch.nn.Module, optional
        The strategy's forward (see above).
    downsampler, token_dropping, exit_heads, exit_criterion, exit_threshold, exit_min_layer
        The older spelling of ``encode`` (at most one of the first three).

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

    def __init__(self, backbone, head, ctc_lin, blank_index=0, encode=None, downsampler=None,
                 token_dropping=None, exit_heads=None, exit_criterion="entropy",
                 exit_threshold=0.7, exit_min_layer=1):
        super().__init__()
        legacy = {"downsampler": downsampler, "token_dropping": token_dropping,
                  "exit_heads": exit_heads}
        given = [name for name, part in legacy.items() if part is not None]
        if len(given) + (encode is not None) > 1:
            raise ValueError("give at most one of encode, downsampler, token_dropping and "
                             "exit_heads")
        if downsampler is not None:
            encode = DownsampledCTC(downsampler)
        elif token_dropping is not None:
            encode = DroppedFramesCTC(token_dropping)
        elif exit_heads is not None:
            encode = ExitCTC(exit_heads, exit_criterion, exit_threshold, exit_min_layer)
        #: the key prefix of a checkpoint written before ``encode`` existed
        self._legacy_prefix = given[0] if given else None
        self.backbone, self.head, self.ctc_lin = backbone, head, ctc_lin
        self.blank_index = int(blank_index)
        self.encode = encode

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"backbone": self.backbone, "head": self.head, "ctc_lin": self.ctc_lin,
                "blank_index": self.blank_index, "encode": self.encode}

    @property
    def exit_blocks(self):
        """With early exit, the block each utterance of the last batch exited after."""
        return self.encode.exit_blocks

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
        if self.encode is not None:
            return self.encode(self, wavs, wav_lens)
        return self.log_probs(self.backbone(wavs, wav_lens))

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
        state = torch.load(path, map_location="cpu", weights_only=True)
        prefix = self._legacy_prefix
        if prefix is not None:  # written as <prefix>.*: the part now holds it as encode.<prefix>.*
            state = {f"encode.{key}" if key.split(".")[0] == prefix else key: value
                     for key, value in state.items()}
        self.load_state_dict(state)


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

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"backbone": self.backbone, "head": self.head}

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
