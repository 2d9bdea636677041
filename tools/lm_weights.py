#!/usr/bin/env python3
"""Tune the recipe's LM weight and word insertion bonus on a dev split of a finished run.

The recipes decode with ``lm_weight * ln P(word | history) + lm_word_insertion`` per word
(``s3brain.training.lm.CTCBeamLMDecoder``). Their defaults (2.0, -1.0) were tuned on the grammar
corpus; another corpus or LM text needs its own. This script computes the CTC log-probabilities
of the run's dev utterances once, estimates the n-gram as the recipe now would
(``lm_text_splits`` plus ``lm_text_files``; or takes ``--kenlm_model``), decodes every utterance
at each point of the grid and prints a Markdown table of dev WER, with the greedy WER and the
best point. Never tune on a test split.

    OMP_NUM_THREADS=1 ./s3env python tools/lm_weights.py results/realtext/weight_ft \\
        --limit 300 --weights 0.5 1 1.5 2 --insertions -1 0 1 2 --out results/lm_weights
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def recipe_module(path):
    """A recipe's script (``train.py``) as a module, without running its ``__main__``."""
    spec = importlib.util.spec_from_file_location(f"recipe_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_run(run):
    """The run's hyperparameters with the best checkpoint loaded into backbone and head."""
    from hyperpyyaml import load_hyperpyyaml

    from s3brain.utils.checkpoint import load_finetuned

    with open(run / "hyperparams.yaml") as f:
        hparams = load_hyperpyyaml(f)
    load_finetuned(run, {"ssl": hparams["ssl"], "model": hparams["model"]})
    for name in ("ssl", "head", "ctc_lin"):
        hparams[name].eval()
    return hparams


def split_log_probs(run, hparams, splits, limit=None):
    """``{split: [(utterance id, reference words, [frames, labels] log-probs)]}``, one
    utterance at a time (no padding)."""
    import speechbrain as sb

    from s3brain.backbone.audio import backbone_rate, read_audio
    from s3brain.strategies.base import encode

    rate = backbone_rate(hparams["ssl"])
    strategies = hparams.get("strategies") or []
    out = {}
    with torch.no_grad():
        for split in splits:
            rows = sb.dataio.dataio.load_data_csv(run / f"{split}.csv")
            items = []
            for uid, row in list(rows.items())[:limit]:
                wav = read_audio(row["wav"], rate)[None]
                feats, _ = encode(strategies, hparams["ssl"], wav, torch.ones(1), None)
                logits = hparams["ctc_lin"](hparams["head"](feats))
                logp = hparams["log_softmax"](logits)[0].numpy().astype(np.float32)
                items.append((uid, row["wrd"].split(), logp))
            out[split] = items
    return out


def greedy(labels, blank):
    """Greedy CTC decoding (the recipe's first WER column), for reference."""
    def decode(logp):
        best = logp.argmax(1)
        keep = [i for j, i in enumerate(best) if i != blank and (j == 0 or best[j - 1] != i)]
        return "".join(labels[i] for i in keep).split()
    return decode


def recipe_lm(hparams, out):
    """The ARPA model ``recipes/LibriSpeech/train.py`` estimates for ``hparams`` (training
    transcripts of ``lm_text_splits`` and the lines of ``lm_text_files``), written to ``out``."""
    from s3brain.data.synthetic import corpus_dir, generate, lm_text_files

    train = recipe_module(REPO / "recipes" / "LibriSpeech" / "train.py")

    seed, size = hparams["synthetic_seed"], hparams["synthetic_size"]
    if Path(hparams["data_folder"]).resolve() == corpus_dir(seed, size).resolve():
        generate(seed=seed, size=size, progress=False)  # the corpus's LM text file, if missing
    options = dict(hparams)
    options.setdefault("lm_text_files", lm_text_files(seed, size))
    options.update(save_folder=str(out), kenlm_model=None, lm_decoding=True)
    Path(out).mkdir(parents=True, exist_ok=True)
    train.lm_decoder_for(options, train.label_encoder_for(options))
    return Path(out) / f"lm_{options['lm_order']}gram.arpa"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="output folder of a finished train.py run")
    parser.add_argument("--split", default="dev-clean", help="a dev split with a manifest in RUN")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances of it")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--insertions", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 2.0])
    parser.add_argument("--kenlm_model", type=Path, default=None,
                        help="ARPA file (default: estimated as the recipe would, into --out)")
    parser.add_argument("--out", type=Path, default=Path("results/lm_weights"))
    args = parser.parse_args(argv)
    if args.split.startswith("test"):
        parser.error("tune on a dev split, not on a test split")

    import speechbrain as sb
    from tqdm import tqdm

    from s3brain.training.lm import CTCBeamLMDecoder

    torch.set_num_threads(1)
    hparams = load_run(args.run)
    arpa = str(args.kenlm_model or recipe_lm(hparams, args.out))
    blank = hparams["blank_index"]
    labels = list(hparams["alphabet"])
    labels.insert(blank, "")  # the recipe's CTCTextEncoder: blank, then the alphabet in order
    start = time.perf_counter()
    items = split_log_probs(args.run, hparams, [args.split], args.limit)[args.split]
    print(f"log-probs of {len(items)} utterances in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)

    def wer(decode):
        stats = sb.utils.metric_stats.ErrorRateStats()
        for uid, ref, logp in items:
            stats.append([uid], [decode(logp)], [ref])
        return stats.summarize("error_rate")

    grid = {}
    points = [(w, b) for w in args.weights for b in args.insertions]
    for weight, bonus in tqdm(points, desc="LM weight grid"):
        decoder = CTCBeamLMDecoder(labels, arpa, hparams["lm_beam_width"], weight, bonus)
        grid[weight, bonus] = wer(decoder.decode)
    best = min(grid, key=grid.get)
    default = (hparams["lm_weight"], hparams["lm_word_insertion"])
    print(f"{args.split}, {len(items)} utterances, LM {arpa}; greedy WER "
          f"{wer(greedy(labels, blank)):.2f}"
          + (f"; the run's setting {default}: {grid[default]:.2f}" if default in grid else "")
          + "\n")
    print("| lm_weight \\ lm_word_insertion | " + " | ".join(f"{b:g}" for b in args.insertions)
          + " |")
    print("|---" * (len(args.insertions) + 1) + "|")
    for weight in args.weights:
        cells = [f"**{grid[weight, b]:.2f}**" if (weight, b) == best else f"{grid[weight, b]:.2f}"
                 for b in args.insertions]
        print(f"| {weight:g} | " + " | ".join(cells) + " |")
    print(f"\nbest: --lm_weight={best[0]:g} --lm_word_insertion={best[1]:g} "
          f"(dev WER {grid[best]:.2f})")
    return 0 if np.isfinite(grid[best]) else 1


if __name__ == "__main__":
    sys.exit(main())
