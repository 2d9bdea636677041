"""WordNet's example sentences as corpus text (s3brain.data.realtext)."""

import re

import pytest

from s3brain.data.realtext import normalise, sentences, wordnet_examples


@pytest.mark.parametrize("example, spoken", [
    ("I can breathe better when the air is clean", "I can breathe better when the air is clean"),
    ("they make good music--you should give them a hearing",
     "they make good music you should give them a hearing"),
    ("calling his seduction of the girl a `score' was a typical example",
     "calling his seduction of the girl a score was a typical example"),
    ("`moo-cow' is a child's term", "moo cow is a child's term"),
    ("How does this shirt fit?", "How does this shirt fit"),
    ("he was elected to a seat in the Senate.", "he was elected to a seat in the Senate"),
])
def test_normalise_keeps_words_apostrophes_and_case(example, spoken):
    assert normalise(example) == spoken


@pytest.mark.parametrize("example", [
    "she left a wake-up call for 7 a.m.",                      # digit, abbreviation
    "the sun contains 99.85% of the mass in the solar system",  # digits, symbol
    "the barn spider was made famous in E. B. White's book",    # initials
    "a creature...settles into a mold of desiccated snobbery",  # ellipsis
    "he worked for the FBI in those days",                      # acronym: espeak spells it
    "if f is a function then so is g",                          # single letters
    "alcohol (or drink) ruined him badly",                      # aside in parentheses
    "polar diameter",                                           # too short
    " ".join(["word"] * 21),                                    # too long
])
def test_normalise_leaves_out_what_cannot_be_spoken_as_written(example):
    assert normalise(example) is None


def test_sentences_are_transcripts_with_their_spoken_text():
    found = sentences()
    assert len(found) > 30000
    transcripts = [s.transcript for s in found]
    assert transcripts == sorted(set(transcripts))  # distinct, in a fixed order
    for s in found:
        assert s.transcript == s.spoken.upper()
        assert re.fullmatch(r"[A-Z']+( [A-Z']+){3,19}", s.transcript), s
    assert len({w for t in transcripts for w in t.split()}) > 20000
    assert sentences() == found and sentences() is not sentences()  # a fresh list each time


def test_examples_come_from_the_glosses():
    examples = wordnet_examples()
    assert len(examples) > 40000
    assert "I can breathe better when the air is clean" in examples


def test_missing_wordnet_says_how_to_install_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        wordnet_examples(tmp_path)
