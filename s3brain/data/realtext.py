"""Real English sentences for the synthetic corpus: the usage examples of WordNet 3.0.

WordNet's glosses end with usage examples in double quotes (``breathe: draw air into, and expel
out of, the lungs; "I can breathe better when the air is clean"``): about 48,000 of them in
``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv``, written by lexicographers, on every
subject. Debian's ``wordnet-base`` package installs these files in ``/usr/share/wordnet``
(``./s3env`` installs it; ``$WNSEARCHDIR``, WordNet's own variable, points elsewhere).

Licence: the WordNet 3.0 licence of Princeton University ("WordNet 3.0 Copyright 2006 by
Princeton University. All rights reserved."; permission to use, copy, modify and distribute for
any purpose without fee, keeping the notice and the disclaimer; see
``/usr/share/doc/wordnet-base/copyright``). The corpus derived from it is made locally and not
distributed by this project.

``sentences()`` returns the examples normalised as LibriSpeech transcripts need: upper case
letters, apostrophes inside words and single spaces. An example is left out when it holds a digit
or a symbol that cannot be spelled out (``$ % / + = ^ & ( )``), an abbreviation or an ellipsis
(a full stop before its end), a single letter other than ``A`` and ``I``, or a word of two or more
capitals (acronyms, which espeak-ng spells letter by letter), or when it has fewer than 4 or
more than 20 words. Each one comes with the text to speak, which keeps the original case:
espeak-ng spells upper-case ``US`` or ``IT`` as letters.

Example
-------
>>> normalise("I can breathe better when the air is clean")
'I can breathe better when the air is clean'
>>> normalise("he wasn't sick--it was just a `subterfuge'.")
"he wasn't sick it was just a subterfuge"
>>> normalise("she left a wake-up call for 7 a.m.") is None
True
>>> examples = sentences()
>>> len(examples) > 20000
True
>>> examples[0].transcript == examples[0].spoken.upper()
True
"""

import functools
import os
import re
from collections import namedtuple
from pathlib import Path

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")

Sentence = namedtuple("Sentence", ["transcript", "spoken"])
Sentence.__doc__ = "An example sentence: its upper-case transcript and the text espeak-ng speaks."

_QUOTED = re.compile(r'"([^"]*)"')
_SEPARATORS = re.compile(r"[\s,;:!?`\-]+")
_UNSPEAKABLE = re.compile(r"[^A-Za-z'.,;:!?`\-\s]")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def wordnet_folder():
    """The folder of WordNet's database files: ``$WNSEARCHDIR`` or ``/usr/share/wordnet``."""
    return Path(os.environ.get("WNSEARCHDIR") or "/usr/share/wordnet")


def wordnet_examples(folder=None):
    """Every quoted usage example of the WordNet glosses, in file order, as written.

    Parameters
    ----------
    folder : str or Path, optional
        WordNet's database folder (default: ``wordnet_folder()``).

    Returns
    -------
    list of str
    """
    folder = Path(folder or wordnet_folder())
    missing = [name for name in WORDNET_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet's {', '.join(missing)} not found in {folder}: apt-get install wordnet-base "
            "(./s3env does), or set WNSEARCHDIR to a WordNet 3.0 dict folder")
    examples = []
    for name in WORDNET_FILES:
        with open(folder / name, encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # the licence at the top of each file
                    continue
                examples += _QUOTED.findall(line.partition(" | ")[2])
    return examples


def normalise(example, min_words=4, max_words=20):
    """The words of ``example`` as espeak-ng should speak them, or None if it is unusable.

    Parameters
    ----------
    example : str
        One usage example, as written.
    min_words, max_words : int
        The accepted length in words.

    Returns
    -------
    str or None
        The words separated by single spaces, in their original case (upper-case it for the
        transcript).
    """
    text = example.strip().rstrip(".!?").strip()
    if _UNSPEAKABLE.search(text) or "." in text:
        return None
    words = []
    for token in _SEPARATORS.split(text):
        token = token.strip("'")
        if not token:
            continue
        if not _WORD.fullmatch(token):  # a stray apostrophe or quote inside a token
            return None
        if len(token) == 1 and token.upper() not in ("A", "I"):
            return None
        if sum(c.isupper() for c in token) > 1:
            return None
        words.append(token)
    if not min_words <= len(words) <= max_words:
        return None
    return " ".join(words)


def sentences(folder=None, min_words=4, max_words=20):
    """The usable WordNet examples, one per distinct transcript, sorted by transcript.

    Parameters
    ----------
    folder : str or Path, optional
        WordNet's database folder (default: ``wordnet_folder()``).
    min_words, max_words : int
        The accepted length in words.

    Returns
    -------
    list of Sentence
        ``(transcript, spoken)`` pairs; the order does not depend on the files' order.
    """
    return list(_sentences(str(Path(folder or wordnet_folder()).resolve()), min_words, max_words))


@functools.lru_cache(maxsize=4)
def _sentences(folder, min_words, max_words):
    chosen = {}
    for example in wordnet_examples(folder):
        spoken = normalise(example, min_words, max_words)
        if spoken is not None:
            chosen.setdefault(spoken.upper(), spoken)
    return tuple(Sentence(transcript, chosen[transcript]) for transcript in sorted(chosen))
