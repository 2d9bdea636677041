"""n-gram language models for CTC beam search: building them with KenLM, decoding with SpeechBrain.

KenLM's estimator (``lmplz``) ships in no wheel; ``ensure_kenlm_tools`` builds it once from the
kenlm sdist with cmake (about 40 s; needs g++, cmake and the Boost dev packages, which ``s3env``
installs) into ``~/.cache/s3brain/kenlm-<version>`` (or ``$S3BRAIN_KENLM_BIN``). A real user
passes the official LibriSpeech 4-gram (``--kenlm_model=4-gram.arpa``) and needs none of it.

Example
-------
>>> import tempfile, numpy as np
>>> with tempfile.TemporaryDirectory() as tmp:
...     arpa = write_uniform_arpa(f"{tmp}/lm.arpa", ["A", "B"])
...     decoder = CTCBeamLMDecoder(["", " ", "A", "B"], arpa, beam_width=8)
...     # frames: A, blank, space, B (peaky log-probabilities)
...     logp = np.log(np.full((4, 4), 0.01) + np.eye(4)[[2, 0, 1, 3]] * 0.96)
...     decoder.decode(logp)
['A', 'B']
"""

import concurrent.futures
import fcntl
import logging
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


KENLM_VERSION = "0.3.0"


def kenlm_bin_dir():
    """Folder holding (or to hold) ``lmplz`` and ``build_binary``."""
    if os.environ.get("S3BRAIN_KENLM_BIN"):
        return Path(os.environ["S3BRAIN_KENLM_BIN"])
    return Path.home() / ".cache" / "s3brain" / f"kenlm-{KENLM_VERSION}" / "bin"


def find_lmplz():
    """Path of an ``lmplz`` executable already there (cache or PATH), or None."""
    cached = kenlm_bin_dir() / "lmplz"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("lmplz")
    return Path(on_path) if on_path else None


def ensure_kenlm_tools():
    """Path of ``lmplz``, built from the kenlm sdist the first time (one process at a time)."""
    found = find_lmplz()
    if found:
        return found
    target = kenlm_bin_dir()
    target.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_lmplz()  # built by another process meanwhile?
        if found:
            return found
        for tool in ("cmake", "g++"):
            if not shutil.which(tool):
                raise RuntimeError(f"building KenLM's lmplz needs {tool}: run ./s3env once, or "
                                   "apt-get install cmake g++ libboost-program-options-dev "
                                   "libboost-system-dev libboost-thread-dev libboost-test-dev")
        logger.info("Building KenLM %s lmplz into %s (once, about a minute)", KENLM_VERSION, target)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--no-binary", "kenlm", f"kenlm=={KENLM_VERSION}", "-d", tmp],
                           check=True)
            with tarfile.open(next(Path(tmp).glob("kenlm-*.tar.gz"))) as tar:
                tar.extractall(tmp, filter="data")
            source = next(p for p in Path(tmp).glob("kenlm-*") if p.is_dir())
            build = Path(tmp) / "build"
            build.mkdir()
            log = Path(tmp) / "build.log"
            with open(log, "w") as out:
                try:
                    subprocess.run(["cmake", str(source), "-DCMAKE_BUILD_TYPE=Release"],
                                   cwd=build, stdout=out, stderr=out, check=True)
                    subprocess.run(["make", f"-j{os.cpu_count() or 1}", "lmplz", "build_binary"],
                                   cwd=build, stdout=out, stderr=out, check=True)
                except subprocess.CalledProcessError as err:
                    tail = log.read_text()[-2000:]
                    raise RuntimeError(f"building lmplz failed:\n{tail}") from err
            for tool in ("lmplz", "build_binary"):
                shutil.copy2(build / "bin" / tool, target / f".{tool}.tmp")
                os.replace(target / f".{tool}.tmp", target / tool)
    return target / "lmplz"


def build_ngram(lines, arpa_path, order=4):
    """Estimate a modified Kneser-Ney ``order``-gram from text ``lines`` into ``arpa_path``.

    ``--discount_fallback`` lets it work on the small corpora of the embedded default.
    """
    lmplz = ensure_kenlm_tools()
    arpa_path = Path(arpa_path)
    arpa_path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line.strip() + "\n" for line in lines if line.strip())
    if not text:
        raise ValueError("no text to build a language model from")
    partial = arpa_path.with_suffix(".partial")
    with open(partial, "w") as out:
        done = subprocess.run([str(lmplz), "-o", str(order), "--discount_fallback", "-S", "20%"],
                              input=text, text=True, stdout=out, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise RuntimeError(f"lmplz failed: {done.stderr[-2000:]}")
    os.replace(partial, arpa_path)
    return arpa_path


def write_uniform_arpa(path, words):
    """A uniform bigram ARPA model over ``words`` (tests and toy examples; KenLM needs order 2)."""
    logp = math.log10(1.0 / (len(words) + 1))
    unigrams = [f"{logp:.4f}\t{w}\t0.0" for w in words]
    unigrams += [f"{logp:.4f}\t</s>", "-99\t<s>\t0.0", f"{logp:.4f}\t<unk>"]
    bigrams = [f"{logp:.4f}\t<s> {w}" for w in words]
    Path(path).write_text(f"\\data\\\nngram 1={len(unigrams)}\nngram 2={len(bigrams)}\n\n"
                          "\\1-grams:\n" + "\n".join(unigrams) + "\n\n"
                          "\\2-grams:\n" + "\n".join(bigrams) + "\n\n\\end\\\n")
    return str(path)


def arpa_unigrams(path):
    """The words of an ARPA model's unigram section (``<s>``, ``</s>`` and ``<unk>`` left out)."""
    words, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
            elif inside and line.startswith("\\"):
                break
            elif inside and line:
                word = line.split("\t")[1]
                if word not in ("<s>", "</s>", "<unk>"):
                    words.append(word)
    return words


def sentence_end_scoring(searcher_class):
    """``searcher_class`` (a SpeechBrain CTC searcher) scoring its final hypotheses as sentences.

    SpeechBrain 1.1.2 scores the last word of each final hypothesis without ``is_eos``, so the
    LM's ``log P(</s> | last words)`` never counts; pyctcdecode counts it. This subclass passes
    ``is_eos=True`` to ``get_lm_beams`` while ``finalize_decoding`` runs at the end of the
    utterance, which makes the output the same as pyctcdecode's (400 of 400 test utterances of
    the embedded default). A SpeechBrain that passes ``is_eos`` itself is unaffected.

    Parameters
    ----------
    searcher_class : type
        ``speechbrain.decoders.ctc.CTCBeamSearcher`` or ``CTCPrefixBeamSearcher``.

    Returns
    -------
    type
        A subclass taking the same arguments.
    """

    class SentenceEndScoring(searcher_class):
        """``searcher_class`` that also scores the sentence end at the last frame."""
        _at_end = False

        def finalize_decoding(self, *args, is_end=False, **kwargs):
            """SpeechBrain's finalisation, remembering whether this is the last frame."""
            self._at_end = is_end
            try:
                return super().finalize_decoding(*args, is_end=is_end, **kwargs)
            finally:
                self._at_end = False

        def get_lm_beams(self, beams, cached_lm_scores, cached_p_lm_scores, is_eos=False):
            """SpeechBrain's LM scoring of the beams, with the sentence end at the last frame."""
            return super().get_lm_beams(beams, cached_lm_scores, cached_p_lm_scores,
                                        is_eos=is_eos or self._at_end)

    SentenceEndScoring.__name__ = f"SentenceEnd{searcher_class.__name__}"
    return SentenceEndScoring


class CTCBeamLMDecoder:
    """CTC beam search with a KenLM n-gram (SpeechBrain's ``CTCBeamSearcher``).

    The settings are those of pyctcdecode, which this class wrapped before: each word adds
    ``lm_weight * ln P(word | history) + word_insertion`` to the CTC log-probability, a word the
    LM does not know loses 10 more, the end of the utterance adds ``lm_weight * ln P(</s> | ...)``,
    beams more than 10 below the best and tokens under log-probability -5 (unless a frame's best)
    are pruned, and beams that agree on their last n-1 words are merged (``prune_history``).

    Parameters
    ----------
    labels : list of str
        Output symbol per CTC index; ``""`` for blank, ``" "`` for the word boundary.
    kenlm_model : str
        An ARPA or KenLM binary file (the unigrams of an ARPA file are the known words).
    beam_width : int
        Beam size.
    lm_weight : float
        Weight of the LM's natural-log probability (pyctcdecode's alpha).
    word_insertion : float
        Score added per word (pyctcdecode's beta).
    workers : int
        Processes ``decode_batch`` spreads a batch's utterances over (the search is Python,
        one core each; 1: in this process). They start on the first batch of two utterances or
        more, each with its own copy of the decoder, and decode exactly as ``decode`` does.
    """

    def __init__(self, labels, kenlm_model, beam_width=50, lm_weight=2.0, word_insertion=-1.0,
                 workers=1):
        from speechbrain.decoders.ctc import CTCBeamSearcher

        self.settings = (list(labels), str(kenlm_model), beam_width, lm_weight, word_insertion)
        self.workers, self._pool = max(1, int(workers)), None
        if not Path(kenlm_model).is_file():
            raise FileNotFoundError(f"KenLM model {kenlm_model} not found")
        labels = list(labels)
        if "" not in labels or " " not in labels:
            raise ValueError('labels need the blank "" and the word boundary " "')
        self.beam_width = int(beam_width)
        self.searcher = sentence_end_scoring(CTCBeamSearcher)(
            blank_index=labels.index(""), vocab_list=labels, space_token=" ",
            kenlm_model_path=str(kenlm_model), alpha=lm_weight, beta=word_insertion,
            unk_score_offset=-10.0, score_boundary=True, beam_size=self.beam_width,
            beam_prune_logp=-10.0, token_prune_min_logp=-5.0, prune_history=True,
            blank_skip_threshold=1.0, topk=1)

    def decode(self, log_probs):
        """Words of one utterance.

        Parameters
        ----------
        log_probs : numpy.ndarray or torch.Tensor
            ``[frames, labels]`` CTC log-probabilities.

        Returns
        -------
        list of str
            The best hypothesis, split into words.
        """
        import torch

        log_probs = torch.as_tensor(log_probs, dtype=torch.float32)[None]
        return self.searcher(log_probs)[0][0].text.split()

    def decode_batch(self, utterances):
        """Words of several utterances, spread over ``workers`` processes.

        Parameters
        ----------
        utterances : list of numpy.ndarray
            ``[frames, labels]`` CTC log-probabilities, one array per utterance.

        Returns
        -------
        list of list of str
            Each utterance's best hypothesis, in order (what ``decode`` gives each).
        """
        if self.workers == 1 or len(utterances) < 2:
            return [self.decode(u) for u in utterances]
        if self._pool is None:  # spawned: a forked child of an OpenMP process may hang
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(self.settings,))
        chunk = -(-len(utterances) // self.workers)
        return list(self._pool.map(_worker_decode, utterances, chunksize=chunk))

    def close(self):
        """Stop the worker processes. Call it when the decoding is done: a process started by
        ``multiprocessing`` waits at its end for the children it did not stop."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


#: A worker process's decoder (``CTCBeamLMDecoder.decode_batch``).
_WORKER_DECODER = None


def _start_worker(settings):
    """Build the worker's decoder; one thread, as the search uses one core."""
    global _WORKER_DECODER
    import torch

    torch.set_num_threads(1)
    _WORKER_DECODER = CTCBeamLMDecoder(*settings)


def _worker_decode(log_probs):
    """One utterance's words, in a worker."""
    return _WORKER_DECODER.decode(log_probs)
