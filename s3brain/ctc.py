"""CTC mechanisms the recipes' Brains share (LibriSpeech characters, CommonVoice phonemes).

A recipe's ``train.py`` holds its Brain; it uses from here:

- ``usable_utterances``, ``frames_function``, ``ctc_frames_needed``: which manifest rows CTC can
  learn from (labels known, long enough for the backbone's frame count under the strategies);
- ``token_labels``: CTC token ids -> words (characters) or phonemes;
- ``early_exit_of``, ``exit_outputs``, ``with_exit_loss``, ``decode_at_exits``: an
  ``EarlyExit`` strategy's heads are task outputs (CTC over every block's output, and at
  evaluation each utterance decoded at its exit);
- ``lm_decode``: KenLM beam search over a batch of log-probabilities.

Example
-------
>>> ctc_frames_needed(list("hello"))
6
"""

import logging
import time

import speechbrain as sb
import torch

from s3brain.audio import backbone_rate
from s3brain.backbone import normalized_input, output_normalized
from s3brain.early_exit import early_exit, exit_inputs
from s3brain.experiment import unwrapped
from s3brain.families import transformer_blocks
from s3brain.strategies import EarlyExit

logger = logging.getLogger(__name__)


def frames_function(hparams):
    """``seconds -> CTC frames`` of the recipe's model (with a strategy's changed forward, e.g.
    input downsampling)."""
    from s3brain.backbone import feature_frames

    hf, strategies = hparams["ssl"].model, hparams.get("strategies") or []
    rate = backbone_rate(hparams["ssl"])  # audio reaches the backbone at its own rate

    def frames(seconds):
        """CTC frames of ``seconds`` of audio."""
        samples = int(seconds * rate)
        counts = [s.output_frames(hf, samples) for s in strategies]
        counts = [c for c in counts if c is not None]
        return counts[0] if counts else feature_frames(hf, samples)

    return frames


def ctc_frames_needed(labels):
    """Least number of CTC frames for a label sequence: one per label, one blank per repeat."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def usable_utterances(data, labels_of, allowed, frames_of, max_duration):
    """Split manifest rows into usable ones and ``(ID, reason)`` for the rest.

    ``labels_of(row)`` gives the row's label sequence. A row is dropped if a label is not in
    ``allowed``, if it has no labels, if its audio is longer than ``max_duration`` seconds, or if
    the backbone gives fewer frames (``frames_of(seconds)``) than CTC needs.
    """
    kept, dropped = {}, []
    for uid, row in data.items():
        labels, duration = labels_of(row), float(row["duration"])
        bad = sorted(set(labels) - set(allowed))
        if bad:
            dropped.append((uid, f"transcript has symbols outside the label set: {bad}"))
        elif not "".join(labels).strip():
            dropped.append((uid, "empty transcript"))
        elif duration > max_duration:
            dropped.append((uid, f"longer than avoid_if_longer_than ({duration:.1f} s)"))
        elif frames_of(duration) < ctc_frames_needed(labels):
            dropped.append((uid, f"too short for CTC: {frames_of(duration)} frames for "
                                 f"{ctc_frames_needed(labels)} labels"))
        else:
            kept[uid] = row
    return kept, dropped


def token_labels(token_ids, label_encoder, units="chars"):
    """CTC token ids -> words (characters joined, split at spaces) or a phoneme list. Outputs
    beyond the label set (a head wider than the phoneme set) are dropped.

    Arguments
    ---------
    token_ids : list of int
        A decoded sequence (blanks and repeats removed).
    label_encoder : speechbrain.dataio.encoder.CTCTextEncoder
        The labels.
    units : str
        ``chars`` or ``phonemes``.

    Returns
    -------
    list of str
        Words or phonemes.

    Example
    -------
    >>> import speechbrain as sb
    >>> enc = sb.dataio.encoder.CTCTextEncoder()
    >>> enc.insert_blank(index=0); enc.update_from_iterable(list("ab "), sequence_input=False)
    >>> token_labels([1, 3, 2, 9], enc)
    ['a', 'b']
    """
    known = label_encoder.ind2lab
    labels = label_encoder.decode_ndim([i for i in token_ids if i in known])
    return "".join(labels).split() if units == "chars" else list(labels)


def lm_decode(decoder, log_probs, wav_lens):
    """KenLM beam search (``s3brain.lm.CTCBeamLMDecoder``) of each utterance of a batch.

    Arguments
    ---------
    decoder : s3brain.lm.CTCBeamLMDecoder
        The decoder.
    log_probs : torch.Tensor
        ``[batch, frames, labels]``.
    wav_lens : torch.Tensor
        Relative lengths.

    Returns
    -------
    list of list of str
        The words of each utterance.
    """
    frames = (wav_lens * log_probs.shape[1]).round().int().tolist()
    log_probs = log_probs.detach().float().cpu().numpy()
    return [decoder.decode(lp[:n]) for lp, n in zip(log_probs, frames)]


def early_exit_of(strategies):
    """The run's ``EarlyExit`` strategy, or None.

    Arguments
    ---------
    strategies : list of Strategy
        The run's strategies.

    Returns
    -------
    EarlyExit or None
    """
    return next((s for s in strategies if isinstance(s, EarlyExit)), None)


def exit_outputs(strategy, ssl, feats, log_softmax):
    """Split a backbone output into the last block's features and the exits' log-probabilities
    (with an early-exit strategy the backbone returns every block's output).

    Arguments
    ---------
    strategy : EarlyExit or None
        The run's early exit.
    ssl : torch.nn.Module
        The backbone wrapper.
    feats : torch.Tensor
        The backbone's output.
    log_softmax : callable
        Logits -> log-probabilities.

    Returns
    -------
    tuple
        ``(features of the last block, list of exit log-probs or None)``.
    """
    if strategy is None:
        return feats, None
    exits = [log_softmax(head(h)) for head, h in
             zip(strategy.heads, exit_inputs(unwrapped(ssl), feats, strategy.heads))]
    return feats[-1], exits


def with_exit_loss(strategy, loss, exits, ctc_loss):
    """The loss with the exits' mean CTC loss: in place of it for two-step training (only the
    exits learn), added for joint training.

    Arguments
    ---------
    strategy : EarlyExit
        The run's early exit.
    loss : torch.Tensor
        The final head's loss (with the other strategies' terms).
    exits : list of torch.Tensor
        The exits' log-probabilities.
    ctc_loss : callable
        ``log_probs -> CTC loss`` of the batch.

    Returns
    -------
    torch.Tensor
    """
    exit_loss = sum(ctc_loss(e) for e in exits) / len(exits)
    return exit_loss if strategy.training == "two_step" else loss + exit_loss


@torch.no_grad()
def decode_at_exits(strategy, ssl, head, wavs, wav_lens, blank_index):
    """Greedy CTC of each utterance at its early exit (one utterance at a time, as deployed);
    the strategy records each exit block and the time taken.

    Arguments
    ---------
    strategy : EarlyExit
        The run's early exit (heads, criterion, threshold).
    ssl : torch.nn.Module
        The backbone wrapper.
    head : callable
        The final head: last block's features -> logits.
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor
        Relative lengths.
    blank_index : int
        The CTC blank.

    Returns
    -------
    list of list of int
        Token ids of each utterance.
    """
    ssl = unwrapped(ssl)
    blocks = len(transformer_blocks(ssl))

    def head_fn(i, hidden):
        """Log-probabilities of block ``i``'s exit (the final head after the last block)."""
        hidden = output_normalized(ssl, hidden)
        if i == blocks:
            return head(hidden)
        return strategy.heads[i - 1](hidden)

    hyps = []
    for wav, rel in zip(wavs, wav_lens):
        wav = wav[: int(round(float(rel) * wavs.shape[1]))].unsqueeze(0)
        wav = normalized_input(ssl, wav)
        start = time.perf_counter()
        log_probs, block = early_exit(ssl.model, strategy.heads, wav, strategy.criterion,
                                      strategy.threshold, strategy.min_layer, head_fn)
        strategy.record(block, time.perf_counter() - start, wav.shape[1] / backbone_rate(ssl))
        hyps += sb.decoders.ctc_greedy_decode(log_probs, torch.ones(1, device=log_probs.device),
                                              blank_id=blank_index)
    return hyps
