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

from s3brain.backbone.audio import backbone_rate
from s3brain.backbone.wrapper import feature_frames

logger = logging.getLogger(__name__)


def frames_function(hparams):
    """``seconds -> CTC frames`` of the recipe's model (with a strategy's changed forward, e.g.
    input downsampling)."""

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


def lm_decode(decoder, log_probs, wav_lens):
    """KenLM beam search (``s3brain.training.lm.CTCBeamLMDecoder``) of each utterance of a batch.

    Arguments
    ---------
    decoder : s3brain.training.lm.CTCBeamLMDecoder
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
    return decoder.decode_batch([lp[:n] for lp, n in zip(log_probs, frames)])
