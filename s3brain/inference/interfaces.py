"""SpeechBrain ``Pretrained`` interfaces of this project's inference folders:
``S3RouterASR`` (several S3-Router tasks, each a mask file, on one shared backbone) and
``UtteranceClassifier`` (a SUPERB run's deployed classifier, through ``foreign_class``). A plain
CTC run's folder needs none: SpeechBrain's ``EncoderASR`` serves it.
"""

import copy
from pathlib import Path

import torch
from speechbrain.inference.interfaces import Pretrained
from torch import nn

from s3brain.backbone.audio import read_audio
from s3brain.deployment.modules import CTCLabels
from s3brain.strategies.s3router.mask_bank import MaskBank


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
    each, ``s3brain.strategies.s3router.mask_bank.MaskBank``), through SpeechBrain's inference interface: a folder
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
