"""Layer-wise distillation (S6-DAMON, Eq. 2): every block's output kept close to a frozen
teacher's on the frames token dropping kept (on every frame without token dropping).
"""

import copy

import torch

from s3brain.backbone.families import (
    block_outputs,
    hf_model,
    pack_kept,
    transformer_blocks,
)
from s3brain.backbone.wrapper import disable_layerdrop, wav_samples, wrapper_forward
from s3brain.strategies.base import Strategy
from s3brain.strategies.token_dropping import TokenDropping
from s3brain.utils.checkpoint import load_finetuned


class StudentBlocks:
    """Every block's output of the student's last training forward (forward hooks on its
    blocks), for distillation without token dropping; ``kept`` None: every frame counts.

    Arguments
    ---------
    ssl : torch.nn.Module
        The student backbone (its wrapper).

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
    ...     conv_kernel=(10, 3), num_feat_extract_layers=2, layerdrop=0.0))
    >>> student = StudentBlocks(model)
    >>> _ = model.train()(torch.randn(1, 1600))
    >>> len(student.blocks), student.kept is None
    (2, True)
    """

    kept = None

    def __init__(self, ssl):
        self.blocks = []
        blocks = transformer_blocks(ssl)
        blocks[0].register_forward_pre_hook(self._start)
        for block in blocks:
            block.register_forward_hook(self._keep)

    def __deepcopy__(self, memo):
        """A copy of the student (a cost copy) shares this collector; it never trains."""
        return self

    def _start(self, module, args):
        if module.training:
            self.blocks = []

    def _keep(self, module, args, output):
        if module.training:
            self.blocks.append(output[0] if isinstance(output, tuple) else output)


class Distillation(Strategy):
    """Layer-wise distillation (S6-DAMON, Eq. 2): MSE between every block's output and a frozen
    teacher's, on the frames the student kept (``TokenDropping`` in the same list) or on every
    frame; comes before any masks or pruning (the teacher is a copy of the backbone as it is
    then).

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
        disable_layerdrop(ssl, "distillation compares every block's output with the teacher's")
        teacher = copy.deepcopy(ssl)
        load_finetuned(self.teacher_from, {"ssl": teacher}, self.key)
        self.teacher = teacher.requires_grad_(False).eval()
        dropping = [s for s in hparams.get("strategies") or [] if isinstance(s, TokenDropping)]
        if dropping:
            self.student = dropping[0]
            self.student.collect_blocks = True
        else:  # hooks on the student only: the teacher was copied before
            self.student = StudentBlocks(ssl)

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
        if not student or len(student) != len(hiddens):
            raise ValueError("distillation needs the student's every block output, as many "
                             "blocks as the teacher's")
        if kept is None:  # no token dropping: every frame of each utterance
            lengths = hf_model(teacher)._get_feat_extract_output_lengths(
                wav_samples(wavs, wav_lens)).clamp(max=student[0].shape[1])
            kept = length_to_mask(lengths, student[0].shape[1], dtype=torch.bool,
                                  device=wavs.device)
        valid = length_to_mask(kept.sum(1), student[0].shape[1], dtype=torch.bool,
                               device=wavs.device).unsqueeze(-1)
        loss = 0.0
        for t_hidden, s_hidden in zip(hiddens, student):  # every block's output
            t_kept, _ = pack_kept(t_hidden, kept)
            loss = loss + ((s_hidden - t_kept) ** 2 * valid).sum() / (
                valid.sum() * s_hidden.shape[-1])
        return self.weight * loss / len(hiddens)
