"""Batches of per-utterance CTC outputs of different lengths, padded so that SpeechBrain's
greedy decoding reads each as it would read it alone.

Example
-------
>>> import torch
>>> out = blank_padded([torch.zeros(3, 2), torch.zeros(5, 2)], torch.tensor([1.0, 0.5]), 0)
>>> out.shape, int(round(0.5 * out.shape[1])) >= 5
(torch.Size([2, 10, 2]), True)
"""

import math

import torch


def blank_padded(log_probs, wav_lens, blank_index):
    """Per-utterance log-probabilities of different lengths as one batch that greedy CTC
    (``speechbrain.decoders.ctc_greedy_decode``, which reads ``round(wav_len * frames)``
    frames) decodes as it decodes each alone: every utterance is followed by frames that are
    certainly blank, enough that its relative length covers its own frames.

    Arguments
    ---------
    log_probs : list of torch.Tensor
        ``[frames_i, outputs]`` each.
    wav_lens : torch.Tensor
        The batch's relative lengths.
    blank_index : int
        The CTC blank.

    Returns
    -------
    torch.Tensor
        ``[batch, frames, outputs]``.

    Example
    -------
    >>> out = blank_padded([torch.zeros(3, 2), torch.zeros(5, 2)], torch.tensor([1.0, 0.5]), 0)
    >>> out.shape, int(round(0.5 * out.shape[1])) >= 5
    (torch.Size([2, 10, 2]), True)
    """
    rel = [max(float(r), 1e-6) for r in wav_lens]
    frames = max(math.ceil(lp.shape[0] / r) for lp, r in zip(log_probs, rel))
    while any(round(r * frames) < lp.shape[0] for lp, r in zip(log_probs, rel)):
        frames += 1
    first = log_probs[0]
    out = torch.full((len(log_probs), frames, first.shape[-1]), -1e4, dtype=first.dtype,
                     device=first.device)
    out[:, :, blank_index] = 0.0
    for i, lp in enumerate(log_probs):
        out[i, : lp.shape[0]] = lp
    return out


def padded_as_alone(log_probs, lens, wav_lens, blank_index):
    """A batch's log-probabilities after each utterance's frames were shortened to ``lens``
    (frames dropped or skipped), padded with certain blanks so that greedy CTC decodes each
    utterance as alone (``blank_padded``).

    Arguments
    ---------
    log_probs : torch.Tensor
        ``[batch, frames, outputs]``, each utterance's first ``lens * frames`` frames real.
    lens : torch.Tensor
        The utterances' kept frames, relative to ``frames``.
    wav_lens : torch.Tensor
        The batch's relative input lengths.
    blank_index : int
        The CTC blank.

    Returns
    -------
    torch.Tensor
        ``[batch, frames', outputs]``.

    Example
    -------
    >>> out = padded_as_alone(torch.zeros(2, 4, 3), torch.tensor([1.0, 0.5]),
    ...                       torch.tensor([1.0, 1.0]), 0)
    >>> out.shape
    torch.Size([2, 4, 3])
    """
    frames = (lens * log_probs.shape[1]).round().long().tolist()
    return blank_padded([lp[:n] for lp, n in zip(log_probs, frames)], wav_lens, blank_index)
