"""SpeechBrain ``Pretrained`` interfaces of this project's inference folders:
``S3RouterASR`` (several S3-Router tasks, each a mask file, on one shared backbone),
``S3RouterClassifier`` (the same for SUPERB tasks, which it classifies, beside CTC ones) and
``UtteranceClassifier`` (a SUPERB run's deployed classifier, through ``foreign_class``). A plain
CTC run's folder needs none: SpeechBrain's ``EncoderASR`` serves it.
"""

import copy
from pathlib import Path

import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.interfaces import Pretrained
from torch import nn

from s3brain.backbone.audio import read_audio
from s3brain.backbone.wrapper import wrapper_forward
from s3brain.deployment.modules import CTCLabels
from s3brain.lobes.heads import UtteranceHead
from s3brain.strategies.s3router.mask_bank import MaskBank, read_mask_file


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
        return _decoded(log_probs, self.hparams.label_encoders), log_probs

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


def _decoded(log_probs, encoders):
    """``[{target: label}]``, one dict per row of ``log_probs`` (``{target: [batch,
    classes]}``): each target's most likely label."""
    ids = {t: lp.argmax(-1).tolist() for t, lp in log_probs.items()}
    rows = len(next(iter(ids.values()))) if ids else 0
    return [{t: encoders[t].ind2lab[ids[t][i]] for t in ids} for i in range(rows)]


def _labels_beside(path, head):
    """The labels of the run a mask file was written in (its ``save/``, beside the file): a
    SUPERB run's label encoder per target of ``head`` (``label_encoder_<target>.txt``), or
    CommonVoice's phonemes (``label_encoder.txt``); None when the run left none there."""
    save = Path(path).parent / "save"
    if isinstance(head, UtteranceHead):
        files = {t: save / f"label_encoder_{t}.txt" for t in head.classifiers}
        if not all(f.is_file() for f in files.values()):
            return None
        encoders = {t: CategoricalEncoder() for t in files}
        for t, f in files.items():
            encoders[t].load(f)
        return encoders
    if not (save / "label_encoder.txt").is_file():
        return None
    labels = CTCLabels(separator=" ")
    labels.load(save / "label_encoder.txt")
    return labels


class S3RouterASR(Pretrained):
    """One frozen backbone serving any number of S3-Router tasks (a mask file and a head
    each, ``s3brain.strategies.s3router.mask_bank.MaskBank``), through SpeechBrain's inference
    interface: a folder written by ``export_mask_bank`` loads with
    ``foreign_class(source, pymodule_file="custom.py", classname="S3RouterASR")``.

    ``add_task(path, name)`` adds a task file, ``set_task(name)`` switches (only the boolean
    masks are copied; the backbone is never reloaded), ``transcribe_file(path, task)`` and
    ``transcribe_batch(wavs, wav_lens, tasks)``, whose utterances may each belong to another
    task: grouped by task, each group run after a switch, the transcripts returned in the
    batch's order. A task is of one of two kinds, told by its head: a CTC task (``TaskHead``,
    over the last block's features) transcribes; a SUPERB task (``UtteranceHead``, over every
    hidden layer of the backbone) classifies, through ``S3RouterClassifier``, which serves
    both kinds.

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
        for name, task in self.hparams.tasks.items():  # str: a bank that wrote 1986 unquoted
            self.add_task(task["mask"].path, str(name), head=task["head"], labels=task["labels"])
        if self.hparams.tasks:
            self.set_task(str(next(iter(self.hparams.tasks))))

    @property
    def tasks(self):
        """The names of the loaded tasks, in loading order."""
        return self.bank.adapters

    @property
    def active_task(self):
        """The task whose masks are in place."""
        return self.bank.active_adapter

    def classifies(self, task):
        """Whether a task classifies utterances (a SUPERB run's ``UtteranceHead``, reading
        every hidden layer) rather than transcribing them (a CTC ``TaskHead``).

        Arguments
        ---------
        task : str
            A loaded task.

        Returns
        -------
        bool
        """
        return isinstance(self.task_heads[task], UtteranceHead)

    def add_task(self, path, name, head=None, labels=None):
        """Add a task from its mask file (``task_mask.safetensors`` of an S3-Router run).

        Arguments
        ---------
        path : str or Path
            The mask file; it must have been learned on this backbone.
        name : str
            The task's name.
        head : torch.nn.Module, optional
            A module of the task's head architecture, which receives the file's head
            weights: a ``TaskHead`` (CTC) or an ``UtteranceHead`` (SUPERB). Default: a SUPERB
            run's head sized by the file's weights, else a copy of the first CTC task's.
        labels : CTCLabels or dict, optional
            The task's labels: ``CTCLabels``, or ``{target: CategoricalEncoder}`` for a SUPERB
            task. Default: those of the run beside the file (its ``save/``: a SUPERB run's
            encoders, CommonVoice's phonemes), else the first CTC task's.

        Returns
        -------
        str
            ``name``.
        """
        if not isinstance(name, str):
            raise TypeError(f"a task's name is a string; got {name!r}")
        if name in self.labels:
            raise ValueError(f"a task named {name!r} is already loaded")
        if head is None:
            head_state = read_mask_file(path)[1]
            ctc_heads = [h for h in self.task_heads.values() if not isinstance(h, UtteranceHead)]
            if "layer_sum.weights" in head_state:
                head = UtteranceHead.sized_by(head_state)
            elif ctc_heads:
                head = copy.deepcopy(ctc_heads[0])
            else:
                raise ValueError(f"{path}: give its task's head (no CTC task loaded to copy)")
        labels = labels or _labels_beside(path, head)
        if labels is None and not isinstance(head, UtteranceHead):
            labels = next((v for k, v in self.labels.items() if not self.classifies(k)), None)
        if labels is None:
            raise ValueError(f"{path}: give its task's labels (none in the run folder beside "
                             f"it)")
        if isinstance(head, UtteranceHead):  # a head fits its labels, target by target
            if set(labels) != set(head.classifiers):
                raise ValueError(f"task {name!r}: labels for {sorted(labels)}, a head for "
                                 f"{sorted(head.classifiers)}")
            for target, encoder in labels.items():
                encoder.expect_len(head.classifiers[target].out_features)
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
        torch.nn.Module
            The task's head.
        """
        return self.bank.set_adapter(name)

    def encode_batch(self, wavs, wav_lens):
        """What the active task's head gives for a batch: CTC log-probabilities
        ``[batch, frames, outputs]`` from the last block's features, or for a SUPERB task
        ``{target: [batch, classes]}`` log-probabilities from every hidden layer.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` at the backbone's rate.
        wav_lens : torch.Tensor
            Relative lengths.

        Returns
        -------
        torch.Tensor or dict
        """
        wavs, wav_lens = wavs.float().to(self.device), wav_lens.to(self.device)
        task = self.active_task
        features = wrapper_forward(self.mods.backbone, wavs, wav_lens,
                                   every_layer=self.classifies(task))
        if self.classifies(task):
            return {t: logits.log_softmax(-1)
                    for t, logits in self.task_heads[task](features, wav_lens).items()}
        return self.task_heads[task](features)

    def _per_task(self, wavs, wav_lens, tasks, classify, run_group):
        """``run_group(wavs, wav_lens)`` (one result per utterance) over each task's
        utterances of a batch, after a switch to that task; the results in the batch's
        order, the active task left as it was."""
        tasks = list(tasks) if tasks is not None else [self.active_task] * len(wavs)
        if len(tasks) != len(wavs):
            raise ValueError(f"{len(tasks)} tasks for {len(wavs)} utterances")
        unknown = sorted(set(tasks) - set(self.tasks))
        if unknown:
            raise KeyError(f"tasks {unknown} are not loaded; loaded: {self.tasks}")
        other = [t for t in dict.fromkeys(tasks) if self.classifies(t) != classify]
        if other:
            raise ValueError(f"tasks {other} " + (
                "transcribe (transcribe_batch)" if classify else
                "classify (classify_batch of S3RouterClassifier)"))
        if wav_lens is None:
            wav_lens = torch.ones(len(wavs))
        samples = (wav_lens.cpu() * wavs.shape[1]).round().long()
        results = [None] * len(wavs)
        active = self.active_task
        try:
            with torch.no_grad():
                for task in dict.fromkeys(tasks):  # each task once, in order of appearance
                    rows = [i for i, t in enumerate(tasks) if t == task]
                    longest = int(samples[rows].max())
                    self.set_task(task)
                    group = run_group(wavs[rows, :longest], samples[rows].float() / longest)
                    for i, result in zip(rows, group):
                        results[i] = result
        finally:
            if active is not None:
                self.set_task(active)
        return results

    def _transcribe_group(self, wavs, wav_lens):
        """``(transcript, token ids)`` of each utterance of a batch of the active task."""
        log_probs = self.encode_batch(wavs, wav_lens)
        tokens = self.hparams.decoding_function(log_probs, wav_lens.to(self.device))
        labels = self.labels[self.active_task]
        return [("".join(labels.decode_ndim(t)), t) for t in tokens]

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
        results = self._per_task(wavs, wav_lens, tasks, False, self._transcribe_group)
        return [words for words, _ in results], [tokens for _, tokens in results]

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
        """What the active task's head gives (see ``encode_batch``).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor
            Relative lengths.

        Returns
        -------
        torch.Tensor or dict
        """
        return self.encode_batch(wavs, wav_lens)


class S3RouterClassifier(S3RouterASR):
    """A mask bank of SUPERB S3-Router runs (and CTC ones, on the same backbone), through
    SpeechBrain's inference interface: a folder written by ``export_mask_bank`` loads with
    ``foreign_class(source, pymodule_file="custom.py", classname="S3RouterClassifier")``.

    ``S3RouterASR``'s verbs (``tasks``, ``add_task``, ``set_task``, ``transcribe_*`` for the
    CTC tasks), and ``classify_file(path, task)`` / ``classify_batch(wavs, wav_lens, tasks)``:
    each utterance gets its own task's ``{target: label}``, as that run's own inference folder
    (``UtteranceClassifier``) gives it; a batch mixing tasks is grouped by task, each group run
    after a switch.

    Arguments
    ---------
    *args : tuple
        ``Pretrained``'s (modules, hparams, run options).
    **kwargs : dict
        ``Pretrained``'s.

    Example
    -------
    >>> S3RouterClassifier.HPARAMS_NEEDED
    ['tasks', 'sample_rate']
    """

    HPARAMS_NEEDED = ["tasks", "sample_rate"]

    def _classify_group(self, wavs, wav_lens):
        """``({target: label}, {target: log-probabilities})`` of each utterance of a batch of
        the active task."""
        log_probs = self.encode_batch(wavs, wav_lens)
        labels = _decoded(log_probs, self.labels[self.active_task])
        return [(labels[i], {t: lp[i] for t, lp in log_probs.items()})
                for i in range(len(labels))]

    def classify_batch(self, wavs, wav_lens=None, tasks=None):
        """Classify a batch whose utterances may belong to different tasks.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` at the backbone's rate.
        wav_lens : torch.Tensor, optional
            Relative lengths (all 1.0 when None).
        tasks : list of str, optional
            Each utterance's task (default: the active task for all).

        Returns
        -------
        tuple
            ``(labels, log-probabilities)``: one ``{target: label}`` and one
            ``{target: [classes]}`` per utterance, in the batch's order, each of its own
            task's targets; the active task is left as it was.
        """
        results = self._per_task(wavs, wav_lens, tasks, True, self._classify_group)
        return [labels for labels, _ in results], [scores for _, scores in results]

    def classify_file(self, path, task=None):
        """Classify one file (any rate, container and channels, read as the recipes read it)
        with a task.

        Arguments
        ---------
        path : str or Path
            The audio file.
        task : str, optional
            The task (default: the active one).

        Returns
        -------
        dict
            ``{target: label}``.
        """
        signal = read_audio(str(path), int(self.hparams.sample_rate))
        labels, _ = self.classify_batch(signal[None], torch.ones(1), [task or self.active_task])
        return labels[0]
