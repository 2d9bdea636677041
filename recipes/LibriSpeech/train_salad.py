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

Writes to ``output_folder``: the detectors, ``results.json`` (share of non-salient frames on every
split by the teacher's labels; accuracy and recall on salient frames of every detector on the dev
and test splits), and ``pseudo_labels.csv``: the teacher's transcripts of ``train_splits`` in the
LibriSpeech manifest layout, for semi-supervised fine-tuning (``train_extra_csvs``).
"""

import csv
import logging
import sys
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))

import speechbrain as sb  # noqa: E402
import torch  # noqa: E402
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
from s3brain.training.experiment import setup_errors, start_experiment
from s3brain.utils.checkpoint import load_finetuned  # noqa: E402
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


def batches(items, batch_size, shuffle, generator, device="cpu"):
    """Padded detector batches from labelled utterances.

    Arguments
    ---------
    items : list of tuple
        ``(row, features [T, C], labels [T], text)`` per utterance, as ``label_split`` gives.
    batch_size : int
        Utterances per batch (the last batch may be smaller).
    shuffle : bool
        Whether to visit the utterances in a random order.
    generator : torch.Generator
        The source of that order.
    device : str or torch.device
        Where the batches go.

    Yields
    ------
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
    >>> feats, labels, lengths = next(batches(items, 2, False, None))
    >>> tuple(feats.shape), lengths.tolist()
    ((2, 5, 2), [3, 5])
    """
    order = torch.randperm(len(items), generator=generator) if shuffle else torch.arange(len(items))
    for start in range(0, len(items), batch_size):
        chunk = [items[i] for i in order[start:start + batch_size].tolist()]
        lengths = torch.tensor([c[1].shape[0] for c in chunk])
        feats = torch.nn.utils.rnn.pad_sequence([c[1].float() for c in chunk], batch_first=True)
        labels = torch.nn.utils.rnn.pad_sequence([c[2] for c in chunk], batch_first=True)
        yield feats.to(device), labels.to(device), lengths.to(device)


@torch.no_grad()
def evaluate(detector, items, batch_size):
    """Detection accuracy and recall on salient frames over all frames of ``items``."""
    detector.eval()
    device = next(detector.parameters()).device
    logits, labels = [], []
    for feats, lab, lengths in batches(items, batch_size, False, None, device):
        out = detector(feats)
        for b, n in enumerate(lengths.tolist()):
            logits.append(out[b, :n])
            labels.append(lab[b, :n])
    return detection_stats(torch.cat(logits)[None], torch.cat(labels)[None])


def train_detector(hparams, alpha, train_items, valid_items, device="cpu"):
    """One detector, recall-aware BCE with weight ``alpha`` on salient frames; the epoch with the
    lowest dev loss is kept."""
    torch.manual_seed(hparams["seed"])
    detector = SaladDetector(train_items[0][1].shape[1], **hparams["detector"]).to(device)
    optimizer = torch.optim.Adam(detector.parameters(), lr=hparams["lr"])
    generator = torch.Generator().manual_seed(hparams["seed"])
    best, best_state = float("inf"), None
    progress = tqdm(range(hparams["number_of_epochs"]), desc=f"SALAD alpha={alpha:g}",
                    unit="epoch")
    for epoch in progress:
        detector.train()
        for feats, labels, lengths in batches(train_items, hparams["batch_size"], True, generator,
                                              device):
            loss = recall_aware_bce(detector(feats), labels, lengths, alpha)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        detector.eval()
        with torch.no_grad():
            dev = [float(recall_aware_bce(detector(f), lab, n, alpha))
                   for f, lab, n in batches(valid_items, hparams["batch_size"], False, None,
                                            device)]
        dev_loss = sum(dev) / len(dev)
        progress.set_postfix(dev_loss=f"{dev_loss:.4f}")
        if dev_loss < best:
            best, best_state = dev_loss, {k: v.clone() for k, v in detector.state_dict().items()}
    detector.load_state_dict(best_state)
    return detector.cpu().eval()  # saved and measured on the CPU


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
    device = run_opts.get("device", "cpu")
    hparams["ssl"].to(device).eval()
    hparams["model"].to(device).eval()
    out = Path(hparams["output_folder"])
    splits = {"train": manifests["train"],
              **{s: manifests[s] for s in hparams["dev_splits"] + hparams["test_splits"]}}
    limit = None
    if run_opts.get("debug"):  # a few batches per split, few epochs
        limit = run_opts.get("debug_batches", 2) * hparams["batch_size"]
        hparams["number_of_epochs"] = run_opts.get("debug_epochs", 2)
    items = {name: label_split(hparams, path, label_encoder, limit, device)
             for name, path in splits.items()}
    results = {"strategy": "salad_detector", "teacher_from": str(hparams["teacher_from"]),
               "train_split": "+".join(hparams["train_splits"])}
    for name, its in items.items():
        labels = torch.cat([i[2] for i in its])
        results[f"non_salient_share_{name.replace('-', '_')}"] = round(
            1.0 - float(labels.float().mean()), 4)
    results["pseudo_labelled_utterances"] = write_pseudo_labels(out / "pseudo_labels.csv",
                                                                items["train"])
    valid = [i for s in hparams["dev_splits"] for i in items[s]]
    for index, alpha in enumerate(hparams["alphas"]):
        detector = train_detector(hparams, alpha, items["train"], valid, device)
        tag = f"alpha{alpha:g}"
        name = "salad_detector.pt" if index == 0 else f"salad_detector_{tag}.pt"
        stats = {s: evaluate(detector, items[s], hparams["batch_size"])
                 for s in hparams["dev_splits"] + hparams["test_splits"]}
        save_detector(out / name, detector, alpha=alpha, teacher=str(hparams["teacher_from"]),
                      stats=stats)
        results["detector_params"] = sum(p.numel() for p in detector.parameters())
        for split, st in stats.items():
            for key, value in st.items():
                if key != "salient_share":
                    results[f"{key}_{tag}_{split.replace('-', '_')}"] = round(value, 4)
        logger.info("SALAD alpha=%g: %s", alpha, stats)
    update_results(out / "results.json", **results)
    lines = [f"SALAD detector ({results['detector_params']:,} parameters) from the teacher "
             f"{hparams['teacher_from']}"]
    for name in items:
        lines.append(f"  {name}: non-salient frames "
                     f"{results[f'non_salient_share_{name.replace(chr(45), chr(95))}']:.1%}")
    for alpha in hparams["alphas"]:
        for split in hparams["test_splits"]:
            t = f"alpha{alpha:g}_{split.replace('-', '_')}"
            lines.append(f"  alpha {alpha:g} on {split}: accuracy {results[f'accuracy_{t}']:.1%}, "
                         f"recall on salient frames {results[f'salient_recall_{t}']:.1%}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
