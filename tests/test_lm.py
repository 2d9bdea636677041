"""KenLM estimation with lmplz and CTC beam search with it (pyctcdecode)."""

import numpy as np
import pytest

from s3brain.lm import CTCBeamLMDecoder, arpa_unigrams, build_ngram

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
