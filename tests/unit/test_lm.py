"""KenLM estimation with lmplz and CTC beam search with it (SpeechBrain's searcher)."""

import numpy as np
import pytest

from s3brain.training.lm import CTCBeamLMDecoder, arpa_unigrams, build_ngram

LABELS = ["", " ", "A", "C", "D", "E", "H", "O", "G", "S", "T"]


def frames_for(text, ambiguous_last=None):
    """Peaky log-probabilities spelling ``text``; the last frame split between two letters."""
    rows = []
    for char in text:
        row = np.full(len(LABELS), 0.01)
        row[LABELS.index(char)] = 0.9
        rows.append(row)
    if ambiguous_last:
        rows[-1][:] = 0.01
        for char, p in ambiguous_last.items():
            rows[-1][LABELS.index(char)] = p
    probs = np.array(rows)
    return np.log(probs / probs.sum(1, keepdims=True))


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    text = ["THE CAT SAT", "THE DOG SAT", "A CAT SAT", "THE DOG HAD A CAT"] * 5
    return build_ngram(text, tmp_path_factory.mktemp("lm") / "3gram.arpa", order=3)


def test_lmplz_builds_an_arpa_with_the_corpus_words(arpa):
    text = arpa.read_text()
    assert "\\3-grams:" in text
    assert sorted(arpa_unigrams(arpa)) == ["A", "CAT", "DOG", "HAD", "SAT", "THE"]


def test_lm_decoding_fixes_what_greedy_gets_wrong(arpa):
    # Greedy reads "THE CAT SAD" (D 0.5 against T 0.4 on the last frame).
    logp = frames_for("THE CAT SAD", ambiguous_last={"D": 0.5, "T": 0.4})
    greedy = "".join(LABELS[i] for i in logp.argmax(1))
    assert greedy == "THE CAT SAD"
    with_lm = CTCBeamLMDecoder(LABELS, str(arpa), beam_width=16, lm_weight=2.0,
                               word_insertion=-1.0)
    assert with_lm.decode(logp) == ["THE", "CAT", "SAT"]


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="KenLM model"):
        CTCBeamLMDecoder(LABELS, str(tmp_path / "none.arpa"))


def write_arpa(path, unigrams, bigrams=None):
    """A bigram ARPA model: ``unigrams`` word -> log10 P (``<s> word`` gets the same), and
    ``bigrams`` "w1 w2" -> log10 P on top."""
    lines1 = [f"{p:.4f}\t{w}\t0.0" for w, p in unigrams.items()]
    lines1 += ["-1.0000\t</s>", "-99\t<s>\t0.0", "-3.0000\t<unk>"]
    lines2 = [f"{p:.4f}\t<s> {w}" for w, p in unigrams.items()]
    lines2 += [f"{p:.4f}\t{pair}" for pair, p in (bigrams or {}).items()]
    path.write_text(f"\\data\\\nngram 1={len(lines1)}\nngram 2={len(lines2)}\n\n"
                    "\\1-grams:\n" + "\n".join(lines1) + "\n\n"
                    "\\2-grams:\n" + "\n".join(lines2) + "\n\n\\end\\\n")
    return str(path)


def tied_cat_cot():
    """Peaky frames of "CAT" whose middle frame is A or O at 0.45 each: CAT and COT tie."""
    logp = frames_for("CAT")
    row = np.full(len(LABELS), 0.01)
    row[LABELS.index("A")] = row[LABELS.index("O")] = 0.45
    logp[1] = np.log(row / row.sum())
    return logp


@pytest.mark.parametrize("preferred, other", [("CAT", "COT"), ("COT", "CAT")])
def test_the_lm_breaks_an_acoustic_tie(tmp_path, preferred, other):
    # "CAT" and "COT" are equally likely acoustically (A and O at 0.45 each on the middle frame):
    # the word the LM prefers must win, whichever it is.
    arpa = write_arpa(tmp_path / "tie.arpa", {preferred: -0.3, other: -1.5})
    decoder = CTCBeamLMDecoder(LABELS, arpa, beam_width=8, lm_weight=1.0, word_insertion=0.0)
    assert decoder.decode(tied_cat_cot()) == [preferred]


@pytest.mark.parametrize("preferred, other", [("CAT", "COT"), ("COT", "CAT")])
def test_the_sentence_end_counts(tmp_path, preferred, other):
    # Same unigram probability, but only one word is a likely last word: P(</s> | word) decides,
    # as in pyctcdecode (SpeechBrain 1.1.2's searcher alone leaves the sentence end out).
    arpa = write_arpa(tmp_path / "end.arpa", {preferred: -0.5, other: -0.5},
                      {f"{preferred} </s>": -0.1, f"{other} </s>": -2.0})
    decoder = CTCBeamLMDecoder(LABELS, arpa, beam_width=8, lm_weight=1.0, word_insertion=0.0)
    assert decoder.decode(tied_cat_cot()) == [preferred]


def test_peaky_logits_decode_exactly(tmp_path):
    # Confident frames with blanks and repeats between: the beam search reads the spelled words.
    text = "THE DOG HAD A CAT"
    rows = []
    for char in text:
        rows += [char, char, ""] if char != " " else [" "]
    arpa = write_arpa(tmp_path / "words.arpa", dict.fromkeys(text.split(), -0.7))
    logp = np.log(np.array([[0.96 if LABELS[i] == c else 0.004 for i in range(len(LABELS))]
                            for c in rows]))
    decoder = CTCBeamLMDecoder(LABELS, arpa, beam_width=16)
    assert decoder.decode(logp) == text.split()


def test_worker_processes_decode_as_this_process_does(arpa):
    """``decode_batch`` over two worker processes gives each utterance what ``decode`` gives
    it, in order (utterances whose words the LM changes and ones it keeps)."""
    rng = np.random.default_rng(0)
    batch = [frames_for("THE CAT SAD", ambiguous_last={"D": 0.5, "T": 0.4}),
             frames_for("THE DOG HAD A CAT"), frames_for("A CAT SAT")]
    batch += [np.log(np.exp(b) * rng.uniform(0.5, 1.5, b.shape)) for b in batch]
    alone = CTCBeamLMDecoder(LABELS, str(arpa), beam_width=16, lm_weight=2.0)
    spread = CTCBeamLMDecoder(LABELS, str(arpa), beam_width=16, lm_weight=2.0, workers=2)
    try:
        assert spread.decode_batch(batch) == [alone.decode(b) for b in batch]
        assert spread.decode_batch(batch) == alone.decode_batch(batch)  # the pool is reused
        assert spread._pool is not None and alone._pool is None
    finally:
        spread.close()
    assert spread.decode_batch(batch[:1]) == [alone.decode(batch[0])]  # one: no pool
