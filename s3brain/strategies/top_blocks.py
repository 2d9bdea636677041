"""Partial fine-tuning: only the top transformer blocks of the backbone learn, the rest stays
pretrained and is shared by every task (the strategy that CONTRIBUTING.md adds end to end).

A task then stores its trained blocks and its head; the lower blocks, the CNN feature encoder and
the feature projection are the backbone every task shares. In the large layout (stable layer
norm) the encoder's final layer norm comes after the last block, so it belongs to the top and
learns with it; in the base layout it comes before the first block and stays frozen.

Example
-------
>>> from s3brain.backbone.tiny_models import tiny_model
>>> model = tiny_model("wav2vec2", "base")
>>> strategy = TopBlocks(blocks=1)
>>> strategy.setup(model, {})
>>> sorted({n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad})
['1']
"""

import logging

from torch import nn

from s3brain.backbone.families import hf_model, is_stable_layer_norm, transformer_blocks
from s3brain.strategies.base import Strategy

logger = logging.getLogger(__name__)


class TopBlocks(Strategy):
    """Only the top ``blocks`` transformer blocks (and, in the large layout, the final layer
    norm after them) train; a task is those tensors and its head.

    Arguments
    ---------
    blocks : int
        How many blocks, counted from the top, learn (1 to the number of blocks).

    Example
    -------
    >>> TopBlocks(blocks=2).sparsity
    0.0
    """

    #: The pretrained tensors it leaves alone are shared by every task; those it changes travel
    #: in the task's payload (``task_payload``), so a task does not need a whole model.
    keeps_backbone_weights = True

    def __init__(self, blocks=1):
        if int(blocks) < 1:
            raise ValueError(f"trainable_blocks={blocks}: at least the top block must learn")
        self.blocks = int(blocks)
        self.trained = []

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``: freeze the backbone, then unfreeze the top blocks."""
        layers = transformer_blocks(ssl)
        if self.blocks > len(layers):
            raise ValueError(f"trainable_blocks={self.blocks} but the backbone has "
                             f"{len(layers)} transformer blocks")
        ssl.requires_grad_(False)
        top = list(layers[len(layers) - self.blocks:])
        if is_stable_layer_norm(ssl):  # applied after the last block: part of the top
            top.append(hf_model(ssl).encoder.layer_norm)
        for module in top:
            module.requires_grad_(True)
        self.trained = top
        logger.info("Partial fine-tuning: the top %d of %d blocks learn (%d tensors)",
                    self.blocks, len(layers), sum(1 for m in top for _ in m.parameters()))

    def task_payload(self, path, ssl, head, info):
        """See ``Strategy.task_payload``: the trained blocks and the head, in bytes."""
        modules = nn.ModuleList([*self.trained, head])
        return sum(p.numel() * p.element_size() for p in modules.parameters())
