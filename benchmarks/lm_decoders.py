#!/usr/bin/env python3
"""pyctcdecode against SpeechBrain's own CTC beam searchers, with the same KenLM n-gram.

Takes one finished run of ``recipes/LibriSpeech/train.py`` (its ``hyperparams.yaml``, best
checkpoint, test manifests and, for the embedded default, the 4-gram ``save/lm_4gram.arpa``),
computes the CTC log-probabilities of every test utterance once (one utterance at a time, no
padding), then decodes them with

- ``pyctcdecode``: ``pyctcdecode.build_ctcdecoder`` as the recipe used it until now,
- ``sb_beam``: ``speechbrain.decoders.ctc.CTCBeamSearcher`` at the settings that correspond
  one to one (see ``MAPPING``),
- ``sb_beam_full_hist``: the same with ``prune_history=False`` (no merging of beams whose last
  n-1 words agree; pyctcdecode's ``decode`` always prunes),
- ``s3brain.training.lm``: the recipe's ``CTCBeamLMDecoder``, which is ``sb_beam`` with the end-of-sentence
  LM score added to the final hypotheses, as pyctcdecode does (SpeechBrain 1.1.2's
  ``finalize_decoding`` never passes ``is_eos=True`` to ``get_lm_beams``, so
  log P(</s> | last words) is left out; ``s3brain.training.lm.sentence_end_scoring`` adds it),
- ``sb_prefix``: ``speechbrain.decoders.ctc.CTCPrefixBeamSearcher`` at the same settings,
- ``sb_beam_lm<w>``: ``sb_beam`` at other LM weights (``--sb_lm_weights``),

and prints one Markdown table: WER per split (SpeechBrain's ``ErrorRateStats``), mean decoding
time per utterance, and the paired bootstrap 95 % interval over utterances of the WER difference
of each decoder from ``pyctcdecode``. The decoders take turns on each utterance, so a busy
machine slows them alike.

    OMP_NUM_THREADS=1 ./s3env python benchmarks/lm_decoders.py /tmp/lmcmp/weight_ft

Needs pyctcdecode (``pip install pyctcdecode==0.5.0 "numpy<2"``) for the reference column.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Settings of the recipe (hparams lm_beam_width, lm_weight, lm_word_insertion) and of the
# pruning both libraries share; pyctcdecode's names -> SpeechBrain's names. Both scale the KenLM
# log10 score the same way: alpha * log10(P) / log10(e) + beta per word (alpha * ln P + beta).
MAPPING = [
    ("beam_width=50", "beam_size=50"),
    ("alpha=2.0", "alpha=2.0"),
    ("beta=-1.0", "beta=-1.0"),
    ("unk_score_offset=-10", "unk_score_offset=-10"),
    ("lm_score_boundary=True", "score_boundary=True"),
    ("beam_prune_logp=-10", "beam_prune_logp=-10"),
    ("token_min_logp=-5 (>=)", "token_prune_min_logp=-5 (>)"),
    ("prune_history=True (decode() always sets it)", "prune_history=True (its default)"),
    ("unigrams from the arpa", "unigrams from the arpa"),
    ("-", "blank_skip_threshold=1.0 (never skips)"),
]


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


def test_log_probs(run, hparams, splits, limit=None):
    """``{split: [(utterance id, reference words, [frames, labels] log-probs)]}``."""
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


def pyctcdecode_decoder(labels, arpa, beam, alpha, beta):
    """pyctcdecode's beam search, built as the recipe built it (``s3brain.training.lm`` before #16)."""
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        sys.exit('the reference column needs pyctcdecode: '
                 'pip install pyctcdecode==0.5.0 "numpy<2"')

    from s3brain.training.lm import arpa_unigrams

    decoder = build_ctcdecoder(list(labels), kenlm_model_path=str(arpa),
                               unigrams=arpa_unigrams(arpa), alpha=alpha, beta=beta)
    return lambda logp: decoder.decode(logp, beam_width=beam).split()


def speechbrain_decoder(labels, blank, arpa, beam, alpha, beta, prefix=False,
                        prune_history=True):
    """SpeechBrain's ``CTCBeamSearcher`` (or ``CTCPrefixBeamSearcher``) on one utterance."""
    from speechbrain.decoders.ctc import CTCBeamSearcher, CTCPrefixBeamSearcher

    searcher = (CTCPrefixBeamSearcher if prefix else CTCBeamSearcher)(
        blank_index=blank, vocab_list=list(labels), space_token=" ", kenlm_model_path=str(arpa),
        alpha=alpha, beta=beta, unk_score_offset=-10.0, score_boundary=True, beam_size=beam,
        beam_prune_logp=-10.0, token_prune_min_logp=-5.0, prune_history=prune_history,
        blank_skip_threshold=1.0, topk=1)
    return lambda logp: searcher(torch.from_numpy(logp)[None])[0][0].text.split()


def paired_bootstrap(edits_a, edits_b, ref_words, resamples=1000, seed=0):
    """WER(b) - WER(a) in points and its 95 % percentile interval over resampled utterances."""
    edits_a, edits_b, ref_words = (np.asarray(x, dtype=float) for x in (edits_a, edits_b,
                                                                         ref_words))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ref_words), size=(resamples, len(ref_words)))
    diffs = 100 * (edits_b[idx].sum(1) - edits_a[idx].sum(1)) / ref_words[idx].sum(1)
    point = 100 * (edits_b.sum() - edits_a.sum()) / ref_words.sum()
    low, high = np.percentile(diffs, [2.5, 97.5])
    return point, low, high


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="output folder of a finished train.py run")
    parser.add_argument("--kenlm_model", type=Path, default=None,
                        help="ARPA file (default: the run's kenlm_model, else "
                        "save/lm_<order>gram.arpa)")
    parser.add_argument("--sb_lm_weights", type=float, nargs="*", default=[1.5, 2.5],
                        help="extra LM weights for sb_beam")
    parser.add_argument("--no_prefix", action="store_true", help="skip CTCPrefixBeamSearcher")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances per split")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)

    import speechbrain as sb

    from s3brain.training.lm import CTCBeamLMDecoder

    torch.set_num_threads(1)
    hparams = load_run(args.run)
    arpa = args.kenlm_model or hparams.get("kenlm_model") or \
        Path(hparams["save_folder"]) / f"lm_{hparams['lm_order']}gram.arpa"
    arpa = str(arpa)
    blank = hparams["blank_index"]
    labels = list(hparams["alphabet"])
    labels.insert(blank, "")  # the recipe's CTCTextEncoder: blank, then the alphabet in order
    beam, alpha = hparams["lm_beam_width"], hparams["lm_weight"]
    beta = hparams["lm_word_insertion"]

    start = time.perf_counter()
    data = test_log_probs(args.run, hparams, hparams["test_splits"], args.limit)
    print(f"log-probs of {sum(map(len, data.values()))} utterances in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)

    decoders = {"greedy": greedy(labels, blank),
                "pyctcdecode": pyctcdecode_decoder(labels, arpa, beam, alpha, beta),
                "sb_beam": speechbrain_decoder(labels, blank, arpa, beam, alpha, beta),
                "sb_beam_full_hist": speechbrain_decoder(labels, blank, arpa, beam, alpha, beta,
                                                         prune_history=False),
                "s3brain.training.lm": CTCBeamLMDecoder(labels, arpa, beam, alpha, beta).decode}
    if not args.no_prefix:
        decoders["sb_prefix"] = speechbrain_decoder(labels, blank, arpa, beam, alpha, beta,
                                                    prefix=True)
    for weight in args.sb_lm_weights:
        if weight != alpha:
            decoders[f"sb_beam_lm{weight:g}"] = speechbrain_decoder(labels, blank, arpa, beam,
                                                                    weight, beta)

    rows = {}  # (decoder, split) -> (WER, edits per utterance, refs, seconds, hyps)
    for split, items in data.items():
        stats = {name: sb.utils.metric_stats.ErrorRateStats() for name in decoders}
        seconds = {name: 0.0 for name in decoders}
        hyps = {name: [] for name in decoders}
        for uid, ref, logp in items:
            for name, decode in decoders.items():  # take turns on each utterance
                tic = time.perf_counter()
                hyp = decode(logp)
                seconds[name] += time.perf_counter() - tic
                stats[name].append([uid], [hyp], [ref])
                hyps[name].append(hyp)
        for name in decoders:
            summary = stats[name].summarize()
            edits = [s["num_edits"] for s in stats[name].scores]
            refs = [s["num_ref_tokens"] for s in stats[name].scores]
            rows[name, split] = (summary["WER"], edits, refs, seconds[name] / len(items),
                                 hyps[name])

    splits = list(data)
    print(f"\nrun {args.run}, LM {arpa}, beam {beam}, LM weight {alpha}, word insertion {beta}; "
          f"{', '.join(f'{s} {len(data[s])} utt.' for s in splits)}\n")
    head = ["decoder"] + [f"{s} WER" for s in splits] + \
        [f"{s} WER - pyctcdecode [95 % CI]" for s in splits] + \
        [f"{s} same text as pyctcdecode" for s in splits] + ["ms / utt."]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in decoders:
        cells = [name] + [f"{rows[name, s][0]:.2f}" for s in splits]
        for s in splits:
            _, edits_a, refs, _, hyps_a = rows["pyctcdecode", s]
            point, low, high = paired_bootstrap(edits_a, rows[name, s][1], refs, args.resamples)
            cells.append(f"{point:+.2f} [{low:+.2f}, {high:+.2f}]")
        for s in splits:
            same = sum(a == b for a, b in zip(rows["pyctcdecode", s][4], rows[name, s][4]))
            cells.append(f"{same}/{len(data[s])}")
        ms = 1000 * sum(rows[name, s][3] * len(data[s]) for s in splits) / \
            sum(len(data[s]) for s in splits)
        cells.append(f"{ms:.1f}")
        print("| " + " | ".join(cells) + " |")
    print("\nSetting mapping (pyctcdecode -> SpeechBrain):")
    for a, b in MAPPING:
        print(f"  {a:40s} -> {b}")


if __name__ == "__main__":
    main()
