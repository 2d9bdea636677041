#!/usr/bin/env python3
"""Stage 2 of S6-DAMON: train SALAD, the salient audio token detector, on untranscribed audio
labelled frame by frame by a fine-tuned teacher (paper 004, section 3.2).

    python recipes/LibriSpeech/train.py hparams/weight_ft.yaml              # 1. the teacher
    python recipes/LibriSpeech/train_salad.py hparams/salad/detector.yaml   # 2. the detector
    python recipes/LibriSpeech/train.py hparams/salad.yaml                  # 3. fine-tune with it

The teacher (``teacher_from``: the best checkpoint of a weight fine-tuning run) decodes every
utterance of ``train_splits`` (their transcripts are not used) greedily; a CNN frame is salient
when the teacher's symbol there is non-blank and differs from the previous frame's. The detector
sees the frozen CNN features only. One detector is trained per ``alphas`` entry (the weight of the
recall-aware loss on salient frames; 1 is plain BCE), for the paper's Tab. 8; the first is the one
the recipes use (``salad_detector.pt``), the others are kept as ``salad_detector_alpha<a>.pt``.

The detectors train side by side in one ``Brain`` (``DetectorTraining``): the same batches, each
its own loss and its own Adam state (the gradient of the losses' sum is each detector's own), so
each trains as it would alone. Every epoch ends with a checkpoint in ``save_folder`` (detectors,
optimizer, epoch counter, random states) holding each detector's dev loss; each detector is then
taken from the epoch where its dev loss was lowest. A killed run, run again with the same
command, labels the audio again with the teacher and resumes after its last finished epoch.

Writes to ``output_folder``: the detectors, ``results.json`` (share of non-salient frames on every
split by the teacher's labels; accuracy and recall on salient frames of every detector on the dev
and test splits), ``train_log.txt``, and ``pseudo_labels.csv``: the teacher's transcripts of
``train_splits`` in the LibriSpeech manifest layout, for semi-supervised fine-tuning
(``train_extra_csvs``).
"""

import copy
import csv
import logging
import sys
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))

import speechbrain as sb  # noqa: E402
import torch  # noqa: E402
from speechbrain.utils.distributed import if_main_process, infer_device  # noqa: E402
from tqdm import tqdm  # noqa: E402
from train import label_encoder_for, prepare_data  # noqa: E402

from s3brain.backbone.audio import backbone_rate, read_audio  # noqa: E402
from s3brain.strategies.token_dropping import (  # noqa: E402
    SaladDetector,
    detection_stats,
    recall_aware_bce,
    salient_labels,
    save_detector,
)
from s3brain.training.experiment import setup_errors, start_experiment  # noqa: E402
from s3brain.utils.checkpoint import load_finetuned, share_checkpoint_dir, unwrapped  # noqa: E402
from s3brain.utils.results import update_results  # noqa: E402

logger = logging.getLogger(__name__)


@torch.no_grad()
def label_split(hparams, csv_path, label_encoder, limit=None, device="cpu"):
    """CNN features (float16), teacher salient labels and teacher transcript of every utterance
    of one manifest (the first ``limit``): a list of ``(row, features [T, C], labels [T], text)``,
    kept on the CPU; the teacher runs on ``device``."""
    ssl, model = hparams["ssl"], hparams["model"]
    hf = ssl.model
    data = sb.dataio.dataset.DynamicItemDataset.from_csv(csv_path)
    data = data.filtered_sorted(sort_key="duration")
    rate = backbone_rate(ssl)
    sb.dataio.dataset.add_dynamic_item([data], lambda wav: read_audio(wav, rate), takes="wav",
                                       provides="sig")
    sb.dataio.dataset.set_output_keys([data], ["id", "sig"])
    loader = sb.dataio.dataloader.make_dataloader(data, batch_size=hparams["batch_size"])
    with open(csv_path, newline="") as f:
        rows = {r["ID"]: r for r in csv.DictReader(f)}
    out = []
    blank = hparams["blank_index"]
    for batch in tqdm(loader, desc=f"teacher labels {Path(csv_path).stem}", unit="batch"):
        wavs, wav_lens = (t.to(device) for t in batch.sig)
        features = hf.feature_extractor(
            torch.nn.functional.layer_norm(wavs, wavs.shape[1:]) if ssl.normalize_wav else wavs
        ).transpose(1, 2)
        logits = model[1](model[0](ssl(wavs, wav_lens)))
        samples = (wav_lens * wavs.shape[1]).round().long()
        frames = hf._get_feat_extract_output_lengths(samples).clamp(max=features.shape[1])
        ids = logits.argmax(-1)
        labels = salient_labels(ids, blank)
        for b, uid in enumerate(batch.id):
            n = int(frames[b])
            symbols = [i for i, s in zip(ids[b, :n].tolist(), labels[b, :n].tolist()) if s]
            text = " ".join("".join(label_encoder.decode_ndim(symbols)).split())
            out.append((rows[uid], features[b, :n].half().cpu(), labels[b, :n].cpu(), text))
        if limit and len(out) >= limit:
            break
    return out


def pad_batch(items):
    """Collate labelled utterances into one padded detector batch.

    Arguments
    ---------
    items : list of tuple
        ``(row, features [T, C], labels [T], text)`` per utterance, as ``label_split`` gives.

    Returns
    -------
    features : torch.Tensor
        ``[batch, frames, C]`` float, zero-padded.
    labels : torch.Tensor
        ``[batch, frames]``, 1 on salient frames, zero-padded.
    lengths : torch.Tensor
        ``[batch]``, the valid frames of each utterance.

    Example
    -------
    >>> items = [(None, torch.ones(3, 2), torch.tensor([1, 0, 1]), "a"),
    ...          (None, torch.ones(5, 2), torch.tensor([0, 1, 1, 0, 0]), "b")]
    >>> feats, labels, lengths = pad_batch(items)
    >>> tuple(feats.shape), lengths.tolist()
    ((2, 5, 2), [3, 5])
    """
    lengths = torch.tensor([item[1].shape[0] for item in items])
    feats = torch.nn.utils.rnn.pad_sequence([item[1].float() for item in items], batch_first=True)
    labels = torch.nn.utils.rnn.pad_sequence([item[2] for item in items], batch_first=True)
    return feats, labels, lengths


class EpochPermutations(torch.utils.data.Sampler):
    """Epoch ``e`` (from 1) visits the ``e``-th permutation drawn from a generator seeded with
    ``seed``: one generator drawn once per epoch, and an order that a resumed run finds again
    from the epoch number alone.

    Arguments
    ---------
    size : int
        The number of utterances.
    seed : int
        The seed of the generator.

    Example
    -------
    >>> sampler = EpochPermutations(5, seed=3)
    >>> generator = torch.Generator().manual_seed(3)
    >>> first = torch.randperm(5, generator=generator)
    >>> second = torch.randperm(5, generator=generator)
    >>> sampler.set_epoch(2)
    >>> list(sampler) == second.tolist() and list(sampler) != first.tolist()
    True
    """

    def __init__(self, size, seed):
        self.size, self.seed, self.epoch = size, seed, 1

    def set_epoch(self, epoch):
        """Visit epoch ``epoch``'s order next (SpeechBrain calls it as each epoch starts).

        Arguments
        ---------
        epoch : int
            The epoch, from 1.
        """
        self.epoch = epoch

    def __len__(self):
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(max(1, self.epoch)):
            order = torch.randperm(self.size, generator=generator)
        return iter(order.tolist())


def alpha_tag(alpha):
    """How results, files and checkpoints name the detector of loss weight ``alpha``.

    Arguments
    ---------
    alpha : float
        The weight of salient frames in its loss.

    Returns
    -------
    str

    Example
    -------
    >>> alpha_tag(10.0), alpha_tag(0.5)
    ('alpha10', 'alpha0.5')
    """
    return f"alpha{alpha:g}"


def detector_name(alpha):
    """The module (and checkpoint file) name of ``alpha``'s detector; a module name has no dot.

    Arguments
    ---------
    alpha : float
        The weight of salient frames in its loss.

    Returns
    -------
    str

    Example
    -------
    >>> detector_name(10.0), detector_name(0.5)
    ('detector_alpha10', 'detector_alpha0_5')
    """
    return "detector_" + alpha_tag(alpha).replace(".", "_")


class DetectorTraining(sb.Brain):
    """One SALAD detector per ``alphas`` entry (``modules``: ``detector_name(alpha)``), trained
    on the teacher's frame labels with the recall-aware BCE; checkpointed after every epoch with
    each one's dev loss (``loss_<alpha_tag>``). At TEST, the detector of ``evaluated_alpha`` is
    measured (``test_stats``: accuracy and recall on salient frames over all frames)."""

    train_order = None  # the EpochPermutations of the training loader
    evaluated_alpha = None
    train_seconds = None

    def compute_forward(self, batch, stage):
        """Each detector's frame logits (at TEST only the evaluated one's), labels and lengths."""
        feats, labels, lengths = (t.to(self.device) for t in batch)
        alphas = [self.evaluated_alpha] if stage == sb.Stage.TEST else self.hparams.alphas
        logits = {alpha: self.modules[detector_name(alpha)](feats) for alpha in alphas}
        return logits, labels, lengths

    def compute_objectives(self, predictions, batch, stage):
        """The sum of the detectors' recall-aware BCE (each its own ``alpha``); each loss is
        kept for the stage's means, and at TEST the frames for the detection statistics."""
        logits, labels, lengths = predictions
        losses = {alpha: recall_aware_bce(out, labels, lengths, alpha)
                  for alpha, out in logits.items()}
        for alpha, loss in losses.items():
            self.batch_losses[alpha].append(float(loss))
        if stage == sb.Stage.TEST:
            out = logits[self.evaluated_alpha]
            for b, n in enumerate(lengths.tolist()):
                self.test_frames.append((out[b, :n], labels[b, :n]))
        return sum(losses.values())

    def on_fit_start(self):
        """Share the checkpoint folder across DDP processes (then resume) and start the clock."""
        share_checkpoint_dir(self.checkpointer)
        super().on_fit_start()
        self.hparams.run_state.start_timer()

    def on_stage_start(self, stage, epoch=None):
        """Empty loss lists; the training order of ``epoch``."""
        alphas = [self.evaluated_alpha] if stage == sb.Stage.TEST else self.hparams.alphas
        self.batch_losses = {alpha: [] for alpha in alphas}
        self.test_frames = []
        if stage == sb.Stage.TRAIN and self.train_order is not None:
            self.train_order.set_epoch(epoch)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage; at VALID checkpoint with every detector's dev loss, at TEST keep the
        evaluated detector's statistics in ``test_stats``."""
        losses = {f"loss_{alpha_tag(alpha)}": sum(values) / len(values)
                  for alpha, values in self.batch_losses.items()}
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, **losses}
        elif stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats=self.train_stats, valid_stats={"loss": stage_loss, **losses})
            self.checkpointer.save_and_keep_only(meta=losses, min_keys=list(losses))
        else:
            out, labels = (torch.cat(parts)[None] for parts in zip(*self.test_frames))
            self.test_stats = detection_stats(out, labels)
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current,
                            "detector": alpha_tag(self.evaluated_alpha),
                            "split": self.test_split},
                test_stats={**losses, **self.test_stats})

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Stop the training clock (its total in ``train_seconds``), then load the checkpoint
        with the lowest ``min_key``."""
        if self.train_seconds is None:
            self.hparams.run_state.stop_timer()
            self.train_seconds = round(self.hparams.run_state.elapsed(), 1)
        super().on_evaluate_start(max_key=max_key, min_key=min_key)

    def best_detector(self, alpha, split, items):
        """The statistics of ``alpha``'s detector, as of its best epoch, on one split.

        Arguments
        ---------
        alpha : float
            The detector's loss weight.
        split : str
            The split's name (for the log).
        items : list of tuple
            The split's labelled utterances (``label_split``).

        Returns
        -------
        dict
            ``detection_stats``: accuracy, recall on salient frames, salient share.
        """
        self.evaluated_alpha, self.test_split = alpha, split
        self.evaluate(items, min_key=f"loss_{alpha_tag(alpha)}",
                      test_loader_kwargs={"batch_size": self.hparams.batch_size,
                                          "collate_fn": pad_batch})
        return self.test_stats


def write_pseudo_labels(path, items):
    """The teacher's transcripts in the manifest layout; utterances it left empty are omitted."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["ID", "duration", "wav", "spk_id", "wrd"])
        writer.writeheader()
        kept = 0
        for row, _, _, text in items:
            if text:
                writer.writerow({**{k: row[k] for k in ("ID", "duration", "wav", "spk_id")},
                                 "wrd": text})
                kept += 1
    return kept


def main(argv):
    """Label the splits with the teacher, train one detector per ``alphas`` entry and report.

    Arguments
    ---------
    argv : list of str
        The yaml, then overrides, as for any SpeechBrain recipe (``--teacher_from=...``).

    Returns
    -------
    exit_code : int
        0 on success; 2 when the backbone, the data or the teacher cannot be had (the reason is
        printed as one ``ERROR:`` line).
    """
    with setup_errors():  # no backbone, missing data, no teacher: one line
        hparams, run_opts = start_experiment(argv, RECIPE_DIR)
        label_encoder = label_encoder_for(hparams)
        manifests = prepare_data(hparams)
        load_finetuned(hparams["teacher_from"], {"ssl": hparams["ssl"], "model": hparams["model"]})
        if len({alpha_tag(a) for a in hparams["alphas"]}) != len(hparams["alphas"]):
            raise ValueError(f"alphas={hparams['alphas']}: give each weight once")
    # the teacher labels where the Brain will train (SpeechBrain's guess without --device)
    device = run_opts.get("device") or infer_device()
    hparams["ssl"].to(device).eval()
    hparams["model"].to(device).eval()
    out = Path(hparams["output_folder"])
    splits = {"train": manifests["train"],
              **{s: manifests[s] for s in hparams["dev_splits"] + hparams["test_splits"]}}
    limit = None
    if run_opts.get("debug"):  # label only the few batches the Brain's debug mode visits
        limit = run_opts.get("debug_batches", 2) * hparams["batch_size"]
    items = {name: label_split(hparams, path, label_encoder, limit, device)
             for name, path in splits.items()}
    results = {"strategy": "salad_detector", "teacher_from": str(hparams["teacher_from"]),
               "train_split": "+".join(hparams["train_splits"])}
    for name, its in items.items():
        labels = torch.cat([i[2] for i in its])
        results[f"non_salient_share_{name.replace('-', '_')}"] = round(
            1.0 - float(labels.float().mean()), 4)
    results["pseudo_labelled_utterances"] = sum(1 for item in items["train"] if item[3])
    if if_main_process():
        write_pseudo_labels(out / "pseudo_labels.csv", items["train"])

    in_channels = items["train"][0][1].shape[1]
    detectors = {}
    for alpha in hparams["alphas"]:
        torch.manual_seed(hparams["seed"])  # every detector starts where it would alone
        detectors[detector_name(alpha)] = SaladDetector(in_channels, **hparams["detector"])
    for name, detector in detectors.items():
        hparams["checkpointer"].add_recoverable(name, detector)
    brain = DetectorTraining(modules=detectors, opt_class=hparams["opt_class"], hparams=hparams,
                             run_opts=run_opts, checkpointer=hparams["checkpointer"])
    brain.train_order = EpochPermutations(len(items["train"]), hparams["seed"])
    valid = [i for s in hparams["dev_splits"] for i in items[s]]
    brain.fit(hparams["epoch_counter"], items["train"], valid,
              train_loader_kwargs={"batch_size": hparams["batch_size"],
                                   "sampler": brain.train_order, "collate_fn": pad_batch},
              valid_loader_kwargs={"batch_size": hparams["batch_size"], "collate_fn": pad_batch})

    for index, alpha in enumerate(hparams["alphas"]):
        tag = alpha_tag(alpha)
        stats = {s: brain.best_detector(alpha, s, items[s])
                 for s in hparams["dev_splits"] + hparams["test_splits"]}
        detector = unwrapped(brain.modules[detector_name(alpha)])
        name = "salad_detector.pt" if index == 0 else f"salad_detector_{tag}.pt"
        if if_main_process():  # saved on the CPU, whatever the training device
            save_detector(out / name, copy.deepcopy(detector).cpu(), alpha=alpha,
                          teacher=str(hparams["teacher_from"]), stats=stats)
        results["detector_params"] = sum(p.numel() for p in detector.parameters())
        for split, st in stats.items():
            for key, value in st.items():
                if key != "salient_share":
                    results[f"{key}_{tag}_{split.replace('-', '_')}"] = round(value, 4)
        logger.info("SALAD alpha=%g: %s", alpha, stats)
    results["train_seconds"] = brain.train_seconds
    if not if_main_process():
        return 0
    update_results(out / "results.json", **results)
    lines = [f"SALAD detector ({results['detector_params']:,} parameters) from the teacher "
             f"{hparams['teacher_from']}"]
    for name in items:
        lines.append(f"  {name}: non-salient frames "
                     f"{results[f'non_salient_share_{name.replace(chr(45), chr(95))}']:.1%}")
    for alpha in hparams["alphas"]:
        for split in hparams["test_splits"]:
            t = f"{alpha_tag(alpha)}_{split.replace('-', '_')}"
            lines.append(f"  alpha {alpha:g} on {split}: accuracy {results[f'accuracy_{t}']:.1%}, "
                         f"recall on salient frames {results[f'salient_recall_{t}']:.1%}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
