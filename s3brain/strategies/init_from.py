"""Starting a run from the best checkpoint of an earlier one (the pruning strategies start from
a weight fine-tuning run).
"""
from s3brain.strategies.base import Strategy
from s3brain.utils.checkpoint import load_finetuned


class InitFrom(Strategy):
    """Start from the best checkpoint (backbone and head) of an earlier run.

    Arguments
    ---------
    folder : str or None
        The earlier run's output folder; None starts from the pretrained backbone.
    key : str
        The checkpoint metadata key ranked lowest-best (``WER``, ``PER``, ``error``).

    Example
    -------
    >>> InitFrom(None).keeps_backbone_weights, InitFrom("results/ft").keeps_backbone_weights
    (True, False)
    """

    trains_only = True

    def __init__(self, folder, key="WER"):
        self.folder = folder
        self.key = key

    @property
    def keeps_backbone_weights(self):
        """Whether no checkpoint is loaded (the pretrained weights stay)."""
        return not self.folder

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``."""
        if self.folder:

            load_finetuned(self.folder, {"ssl": ssl, "model": hparams["model"]}, self.key)
