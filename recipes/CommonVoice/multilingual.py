#!/usr/bin/env python3
"""One backbone, many languages: load each language's S3-Router mask file into one mask bank,
switch languages at run time, and report per-language PER and the storage against one
fine-tuned model per language.

    python recipes/CommonVoice/multilingual.py results/CommonVoice/{en,de,nl,es}/s3router/1986 \\
        --weight_ft results/CommonVoice/{en,de,nl,es}/weight_ft/1986 --out results/multilingual

Each folder is the output folder of a ``train.py hparams/s3router.yaml --language=<xx>`` run
(``task_mask.safetensors``, ``save/label_encoder.txt``, ``test.csv``, ``results.json``). The
backbone is loaded once (``--ssl_hub``, default: the one the runs used).
"""

import argparse
import json
import time
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.nnet.containers import Sequential
from speechbrain.nnet.linear import Linear

from s3brain.backbone.audio import backbone_rate, read_audio
from s3brain.backbone.wrapper import load_ssl
from s3brain.compare.tables import markdown_table
from s3brain.strategies.s3router.mask_bank import MaskBank, read_mask_file


def head_for(state):
    """A head module with the shapes of a saved head (hidden linear + LeakyReLU, CTC linear)."""
    hidden, inputs = state["0.linear.w.weight"].shape
    outputs = state["1.w.weight"].shape[0]
    head = Sequential(input_shape=[None, None, inputs],
                      linear=Linear(n_neurons=hidden, input_size=inputs),
                      activation=torch.nn.LeakyReLU(), drop=torch.nn.Dropout(0.0))
    return torch.nn.ModuleList([head, Linear(input_size=hidden, n_neurons=outputs)]).eval()


@torch.no_grad()
def phoneme_error_rate(ssl, head, encoder, manifest, batch_size=8):
    """Greedy CTC PER of ``ssl`` + ``head`` over the clips of a manifest."""
    rows = sorted(sb.dataio.dataio.load_data_csv(manifest).items(),
                  key=lambda item: float(item[1]["duration"]))
    known = encoder.lab2ind
    rows = [(uid, row) for uid, row in rows if all(p in known for p in row["phn"].split())]
    metric = sb.utils.metric_stats.ErrorRateStats()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        wavs, lens = sb.dataio.batch.PaddedBatch(
            [{"sig": read_audio(row["wav"], backbone_rate(ssl))} for _, row in chunk]).sig
        log_probs = head[1](head[0](ssl(wavs, lens))).log_softmax(-1)
        hyps = sb.decoders.ctc_greedy_decode(log_probs, lens, blank_id=0)
        predicted = [list(encoder.decode_ndim([i for i in h if i in encoder.ind2lab]))
                     for h in hyps]
        metric.append([uid for uid, _ in chunk], predicted,
                      [row["phn"].split() for _, row in chunk])
    return metric.summarize("error_rate")


def main(argv=None):
    """Serve every language's S3-Router run from one ``MaskBank`` and compare the storage.

    Loads the backbone once, adds each run's ``task_mask.safetensors`` to the bank as an
    adapter named by the run's language, scores each language's test set with that language
    set active, and writes ``multilingual.md`` (PER through the bank beside the run's own and
    the weight fine-tuning run's) and ``storage.json`` (one backbone plus the mask files
    against one fine-tuned model per language, and the median switching time) to ``--out``.

    Arguments
    ---------
    argv : list of str, optional
        ``RUN [RUN ...] [--weight_ft FOLDER ...] [--ssl_hub HUB] [--out FOLDER]``;
        ``sys.argv[1:]`` when None.

    Returns
    -------
    rows : list of dict
        One table row per language.
    storage : dict
        What ``storage.json`` holds.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="S3-Router output folders")
    parser.add_argument("--weight_ft", nargs="*", type=Path, default=[],
                        help="weight fine-tuning output folders of the same languages")
    parser.add_argument("--ssl_hub", default=None)
    parser.add_argument("--out", type=Path, default=Path("results") / "multilingual")
    args = parser.parse_args(argv)

    results = {}
    for run in args.runs:
        run_results = json.loads((run / "results.json").read_text())
        results[run_results["language"]] = (run, run_results)
    hub = args.ssl_hub or next(iter(results.values()))[1]["ssl_hub"]
    args.out.mkdir(parents=True, exist_ok=True)
    ssl = load_ssl(hub, args.out / "ssl")
    ssl.eval()
    bank = MaskBank(ssl)
    encoders, head_bytes = {}, {}
    for language, (run, _) in results.items():
        _, head_state, _ = read_mask_file(run / "task_mask.safetensors")
        head_bytes[language] = sum(t.numel() * t.element_size() for t in head_state.values())
        bank.load_adapter(run / "task_mask.safetensors", language, head=head_for(head_state))
        encoders[language] = sb.dataio.encoder.CTCTextEncoder()
        encoders[language].load(run / "save" / "label_encoder.txt")
        encoders[language].ignore_len()

    rows, switch_ms = [], []
    for language, (run, run_results) in results.items():
        start = time.perf_counter()
        head = bank.set_adapter(language)
        switch_ms.append((time.perf_counter() - start) * 1000)
        per = phoneme_error_rate(ssl, head, encoders[language], run / "test.csv")
        rows.append({"language": language, "PER (bank)": round(per, 2),
                     "PER (own run)": run_results.get("per_test"),
                     "mask file bytes": run_results["storage_bytes_per_task"]})
    weight_ft = {}
    for folder in args.weight_ft:
        r = json.loads((folder / "results.json").read_text())
        weight_ft[r["language"]] = r
    for row in rows:
        other = weight_ft.get(row["language"])
        row["PER weight-ft"] = other.get("per_test") if other else None

    # Without weight fine-tuning runs, a fine-tuned model per language is the backbone plus
    # that language's head.
    backbone = next(iter(results.values()))[1]["backbone_bytes"]
    masks = sum(r["mask file bytes"] for r in rows)
    if len(weight_ft) == len(rows):
        separate = sum(r["storage_bytes_per_task"] for r in weight_ft.values())
    else:
        separate = sum(backbone + head_bytes[r["language"]] for r in rows)
    storage = {"languages": len(rows), "backbone_bytes": backbone, "mask_files_bytes": masks,
               "bank_total_bytes": backbone + masks, "separate_models_bytes": separate,
               "saving": round(1 - (backbone + masks) / separate, 4),
               "median_switch_ms": round(sorted(switch_ms)[len(switch_ms) // 2], 2)}
    table = markdown_table(rows, list(rows[0]))
    (args.out / "multilingual.md").write_text(table + "\n")
    (args.out / "storage.json").write_text(json.dumps(storage, indent=2) + "\n")
    print(table)
    print(f"storage for {len(rows)} languages: one backbone + mask files "
          f"{storage['bank_total_bytes']:,} bytes against separate fine-tuned models "
          f"{separate:,} bytes ({storage['saving']:.1%} less); switching: "
          f"{storage['median_switch_ms']} ms")
    return rows, storage


if __name__ == "__main__":
    main()
