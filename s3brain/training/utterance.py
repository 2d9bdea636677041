"""Utterance-level SUPERB-style tasks (keyword spotting, speaker identification, intent
classification with slots, paralinguistics) on a speech SSL backbone: the mechanisms that the
recipes' ``train.py`` (``recipes/SUPERB/<task>/``) use in their own Brain and ``main``.

- The head (``s3brain.lobes.heads``): SUPERB's weighted sum of every hidden layer, a
  projection, mean pooling over the real frames, one linear classifier per target.
- ``target_ids`` and ``summed_cross_entropy``: a batch's class indices per target and the cross
  entropy summed over the targets.
- ``ClassificationStats``: the predictions of an evaluation pass, summarized by
  ``classification_metrics`` (accuracy of all targets at once, per target, slot F1 by
  ``slot_f1``).
- ``prepare_task`` and ``dataio_prepare``: manifests (the synthetic task generated when it is the
  data folder), datasets and a label encoder per target.

Example
-------
>>> slot_f1([{"object": "lights", "location": "none"}], [{"object": "lights", "location": "kitchen"}])
0.6667
"""

from pathlib import Path

import speechbrain as sb
import torch
from torch import nn

from s3brain.backbone.audio import read_audio
from s3brain.data import superb


def target_ids(batch, targets):
    """The class index of each utterance of ``batch``, per target.

    Arguments
    ---------
    batch : PaddedBatch
        A batch with ``<target>_id`` (``dataio_prepare``).
    targets : sequence of str
        The label columns.

    Returns
    -------
    dict
        ``{target: LongTensor [B]}``.
    """
    return {t: getattr(batch, f"{t}_id").data[:, 0] for t in targets}


def summed_cross_entropy(logits, truth):
    """The cross entropy of a batch, summed over the targets.

    Arguments
    ---------
    logits : dict
        ``{target: [B, classes]}`` (``UtteranceHead``'s output).
    truth : dict
        ``{target: LongTensor [B]}`` (``target_ids``).

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> logits = {"a": torch.zeros(2, 4), "b": torch.zeros(2, 2)}
    >>> truth = {"a": torch.tensor([0, 1]), "b": torch.tensor([1, 1])}
    >>> round(summed_cross_entropy(logits, truth).item(), 4)  # log 4 + log 2
    2.0794
    """
    loss = 0.0
    for target, ids in truth.items():
        loss = loss + nn.functional.cross_entropy(logits[target], ids)
    return loss


def slot_f1(predicted, truth, none="none"):
    """F1 over (slot, value) pairs of a list of ``{slot: value}`` dicts, ``none`` values left out
    (a slot filled wrongly counts as a false positive and a false negative).

    Arguments
    ---------
    predicted : list of dict
        The predicted slots of each utterance.
    truth : list of dict
        The true slots of each utterance.
    none : str
        The value of an empty slot.

    Returns
    -------
    float
        F1 in [0, 1], 4 decimals.
    """
    tp = fp = fn = 0
    for p, t in zip(predicted, truth):
        p_pairs = {(k, v) for k, v in p.items() if v != none}
        t_pairs = {(k, v) for k, v in t.items() if v != none}
        tp += len(p_pairs & t_pairs)
        fp += len(p_pairs - t_pairs)
        fn += len(t_pairs - p_pairs)
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return round(2 * precision * recall / (precision + recall), 4)


def classification_metrics(predictions, truth, targets, slot_targets=(), encoders=None):
    """Accuracy of all ``targets`` at once (%), per target when there are several, and slot F1
    (%) over ``slot_targets`` (class indices decoded with ``encoders``).

    Arguments
    ---------
    predictions : dict
        ``{target: [class index per utterance]}``.
    truth : dict
        ``{target: [class index per utterance]}``.
    targets : sequence of str
        The targets, in order.
    slot_targets : sequence of str
        Those scored by slot F1.
    encoders : dict
        ``{target: CategoricalEncoder}`` of the slot targets.

    Returns
    -------
    dict
        ``accuracy``, ``<target>_accuracy`` with several targets, ``slot_f1`` with slots.

    Example
    -------
    >>> classification_metrics({"label": [0, 1, 1, 2]}, {"label": [0, 1, 2, 2]}, ["label"])
    {'accuracy': 75.0}
    """
    n = len(truth[targets[0]])
    correct = [all(predictions[t][i] == truth[t][i] for t in targets) for i in range(n)]
    stats = {"accuracy": 100.0 * sum(correct) / max(n, 1)}
    if len(targets) > 1:
        for t in targets:
            stats[f"{t}_accuracy"] = 100.0 * sum(
                p == g for p, g in zip(predictions[t], truth[t])) / max(n, 1)
    if slot_targets:
        decode = {t: encoders[t].ind2lab for t in slot_targets}
        pred = [{t: decode[t][predictions[t][i]] for t in slot_targets} for i in range(n)]
        gold = [{t: decode[t][truth[t][i]] for t in slot_targets} for i in range(n)]
        stats["slot_f1"] = 100.0 * slot_f1(pred, gold)
    return stats


class ClassificationStats:
    """The predictions of an evaluation pass, gathered batch by batch and summarized by
    ``classification_metrics`` (as SpeechBrain's ``ErrorRateStats`` for error rates).

    Arguments
    ---------
    targets : sequence of str
        The targets, in order.
    slot_targets : sequence of str
        Those scored by slot F1.
    encoders : dict
        ``{target: CategoricalEncoder}`` (needed for the slot targets).

    Example
    -------
    >>> stats = ClassificationStats(["label"])
    >>> stats.append({"label": torch.tensor([[2.0, 0.0], [2.0, 0.0]])},
    ...              {"label": torch.tensor([0, 1])})
    >>> stats.summarize()
    {'accuracy': 50.0}
    """

    def __init__(self, targets, slot_targets=(), encoders=None):
        self.targets, self.slot_targets, self.encoders = tuple(targets), slot_targets, encoders
        self.predicted = {t: [] for t in self.targets}
        self.truth = {t: [] for t in self.targets}
        self.ids = []

    def append(self, logits, truth, ids=None):
        """Add a batch's predictions (the most likely class of each target).

        Arguments
        ---------
        logits : dict
            ``{target: [B, classes]}``.
        truth : dict
            ``{target: LongTensor [B]}`` (``target_ids``).
        ids : list of str, optional
            The utterances' IDs (``batch.id``), for ``write_predictions``.
        """
        for t in self.targets:
            self.predicted[t] += logits[t].argmax(-1).tolist()
            self.truth[t] += truth[t].tolist()
        n = len(truth[self.targets[0]])
        self.ids += list(ids) if ids is not None else [str(len(self.ids) + i) for i in range(n)]

    def write_predictions(self, filestream, encoders=None):
        """Write one CSV row per utterance: ``ID``, then ``<target>_predicted`` and
        ``<target>_true`` per target, as labels (as SpeechBrain's ``ErrorRateStats.write_stats``
        writes each utterance's alignment).

        Arguments
        ---------
        filestream : file
            An open text file.
        encoders : dict, optional
            ``{target: CategoricalEncoder}`` (default: the ones given at construction).

        Example
        -------
        >>> import io
        >>> from speechbrain.dataio.encoder import CategoricalEncoder
        >>> encoder = CategoricalEncoder()
        >>> encoder.update_from_iterable(["no", "yes"])
        >>> stats = ClassificationStats(["label"])
        >>> stats.append({"label": torch.tensor([[2.0, 0.0], [2.0, 0.0]])},
        ...              {"label": torch.tensor([0, 1])}, ids=["a", "b"])
        >>> out = io.StringIO()
        >>> stats.write_predictions(out, {"label": encoder})
        >>> print(out.getvalue(), end="")
        ID,label_predicted,label_true
        a,no,no
        b,no,yes
        """
        import csv

        decode = {t: (encoders or self.encoders)[t].ind2lab for t in self.targets}
        writer = csv.writer(filestream, lineterminator="\n")
        writer.writerow(["ID", *(f"{t}_{kind}" for t in self.targets
                                 for kind in ("predicted", "true"))])
        for i, uid in enumerate(self.ids):
            writer.writerow([uid, *(decode[t][getattr(self, kind)[t][i]] for t in self.targets
                                    for kind in ("predicted", "truth"))])

    def summarize(self):
        """The pass's metrics (``classification_metrics``).

        Returns
        -------
        dict
        """
        return classification_metrics(self.predicted, self.truth, self.targets,
                                      self.slot_targets, self.encoders)


def prepare_task(prepare_fn, data_folder, save_folder, skip_prep=False, synthetic_task=None,
                 synthetic_seed=0, synthetic_size="default"):
    """Generate the synthetic ``synthetic_task`` when it is the data folder, then run the
    recipe's ``prepare_fn`` on the main process.

    Arguments
    ---------
    prepare_fn : callable
        ``(data_folder, save_folder, skip_prep) -> {split: csv path}``, the recipe's prepare
        script for the real dataset's layout.
    data_folder : str or Path
        The dataset's folder.
    save_folder : str or Path
        Where the manifests go.
    skip_prep : bool
        Trust existing manifests.
    synthetic_task : str, optional
        The embedded default's folder name (``s3brain.data.superb``: ``speech_commands``,
        ``voxceleb1``, ``fluent_speech_commands``, ``prosody``).
    synthetic_seed : int
        Seed of the synthetic data.
    synthetic_size : str
        Size of the synthetic data (``default``, ``tiny``, ``largetest``).

    Returns
    -------
    dict
        ``{"train", "valid", "test": manifest path}``.
    """
    from speechbrain.utils.distributed import run_on_main


    if synthetic_task is not None:
        default = superb.task_dir(synthetic_task, synthetic_seed, synthetic_size)
        if Path(data_folder).resolve() == default.resolve():
            run_on_main(superb.generate_superb, kwargs={"seed": synthetic_seed,
                                                        "size": synthetic_size})
    kwargs = {"data_folder": data_folder, "save_folder": save_folder, "skip_prep": skip_prep}
    run_on_main(prepare_fn, kwargs=kwargs)
    return prepare_fn(**{**kwargs, "skip_prep": True})


def dataio_prepare(manifests, targets, save_folder, sample_rate, sorting="ascending"):
    """Datasets for train, valid and test (``sig`` read from ``wav`` between ``start`` and
    ``stop`` samples when given, ``<target>_id`` per target) and a label encoder per target over
    the labels of every split, saved in ``save_folder``.

    Arguments
    ---------
    manifests : dict
        ``{"train", "valid", "test": csv path}``.
    targets : sequence of str
        The label columns.
    save_folder : str or Path
        Where the label encoders are saved (and read back by a resumed run).
    sample_rate : int
        The backbone's rate (``s3brain.backbone.audio.backbone_rate``): audio is resampled to it.
    sorting : str
        Order of the training set: ``ascending`` or ``descending`` duration, or ``random``
        (left in manifest order for the loader to shuffle).

    Returns
    -------
    tuple
        ``(train, valid, test, {target: CategoricalEncoder})``.
    """
    def dataset(path, sort="ascending"):
        """A manifest as a dataset, sorted by duration unless ``sort`` is random."""
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(path)
        if sort in ("ascending", "descending"):
            data = data.filtered_sorted(sort_key="duration", reverse=sort == "descending")
        return data

    train = dataset(manifests["train"], sorting)
    valid, test = dataset(manifests["valid"]), dataset(manifests["test"])
    datasets = [train, valid, test]

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav, start, stop):
        """The signal at the backbone's rate (a segment when ``start``/``stop`` are given)."""
        start, stop = int(start), int(stop)
        source = wav if stop < 0 else {"file": wav, "start": start, "stop": stop}
        return read_audio(source, sample_rate)  # start/stop in the file's samples, then resampled

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    encoders = {}
    save = Path(save_folder)
    save.mkdir(parents=True, exist_ok=True)
    for target in targets:
        encoder = sb.dataio.encoder.CategoricalEncoder()
        # The class inventory is the task's (every split's labels), not what training saw.
        encoder.load_or_create(save / f"label_encoder_{target}.txt",
                               from_didatasets=datasets, output_key=target)
        encoder.ignore_len()  # the class count is whatever the data has
        encoders[target] = encoder

        def encode(value, encoder=encoder):
            """A label as its class index."""
            return torch.LongTensor([encoder.encode_label(value)])

        sb.dataio.dataset.add_dynamic_item(datasets, encode, takes=target,
                                           provides=f"{target}_id")
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", *(f"{t}_id" for t in targets)])
    return train, valid, test, encoders
