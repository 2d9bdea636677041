"""Layer-wise distillation (S6-DAMON, Eq. 2): every block's output kept close to a frozen
teacher's on the frames token dropping kept.
"""

import copy

import torch

from s3brain.backbone.families import block_outputs, pack_kept
from s3brain.backbone.wrapper import disable_layerdrop, wrapper_forward
from s3brain.strategies.base import Strategy
from s3brain.strategies.token_dropping import TokenDropping
from s3brain.utils.checkpoint import load_finetuned


class Distillation(Strategy):
    """Layer-wise distillation (S6-DAMON, Eq. 2): MSE between every block's output and a frozen
    teacher's, on the frames the student kept; needs ``TokenDropping`` in the same list, and
    comes before any masks or pruning (the teacher is a copy of the backbone as it is then).

    Arguments
    ---------
    weight : float
        Weight of the term; 0 turns distillation off.
    teacher_from : str or None
        The fine-tuned run whose backbone is the teacher.
    key : str
        Its checkpoints' ranking key.

    Example
    -------
    >>> Distillation(0.0, None).loss(None, None, None) is None
    True
    """

    trains_only = True

    def __init__(self, weight=0.0, teacher_from=None, key="WER"):
        self.weight, self.teacher_from, self.key = float(weight), teacher_from, key
        self.teacher = self.student = None

    def __deepcopy__(self, memo):  # a cost copy needs no second teacher
        """A cost copy needs no second teacher: the strategy itself."""
        return self

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``."""
        if self.weight <= 0:
            return

        if not self.teacher_from:
            raise ValueError("distill_weight > 0 needs teacher_from=<a weight fine-tuning run>")
        student = [s for s in hparams.get("strategies") or [] if isinstance(s, TokenDropping)]
        if not student:
            raise ValueError("distillation needs token dropping in the same strategies list")
        self.student = student[0]
        self.student.collect_blocks = True
        disable_layerdrop(ssl, "distillation compares every block's output with the teacher's")
        teacher = copy.deepcopy(ssl)
        load_finetuned(self.teacher_from, {"ssl": teacher}, self.key)
        self.teacher = teacher.requires_grad_(False).eval()

    def loss(self, predictions, batch, stage):
        """See ``Strategy.loss``."""
        if self.teacher is None or stage.name != "TRAIN":
            return None
        from speechbrain.dataio.dataio import length_to_mask


        wavs, wav_lens = batch.sig
        teacher = self.teacher.to(wavs.device).eval()
        with torch.no_grad(), block_outputs(teacher.model) as hiddens:
            wrapper_forward(teacher, wavs, wav_lens, every_layer=False)
        student, kept = self.student.blocks, self.student.kept
        if student is None or len(student) != len(hiddens):
            raise ValueError("distillation needs token dropping and as many blocks as the teacher")
        valid = length_to_mask(kept.sum(1), student[0].shape[1], dtype=torch.bool,
                               device=wavs.device).unsqueeze(-1)
        loss = 0.0
        for t_hidden, s_hidden in zip(hiddens, student):  # every block's output
            t_kept, _ = pack_kept(t_hidden, kept)
            loss = loss + ((s_hidden - t_kept) ** 2 * valid).sum() / (
                valid.sum() * s_hidden.shape[-1])
        return self.weight * loss / len(hiddens)
