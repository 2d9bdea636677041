"""S3-Router as a strategy: learned binary masks over the frozen backbone weights
(``s3brain.strategies.s3router.masks``); a task is its mask file.
"""

import logging

from s3brain.strategies.base import Strategy, _mean
from s3brain.strategies.s3router.mask_bank import TASK_FILE, save_mask
from s3brain.strategies.s3router.masks import add_masks, fold

logger = logging.getLogger(__name__)


class Masks(Strategy):
    """S3-Router: learned binary masks over the frozen backbone weights
    (``s3brain.strategies.s3router.masks.add_masks``); a task is its mask file
    (``task_mask.safetensors``).

    Arguments
    ---------
    sparsity : float or list
        Share of the masked weights removed per layer (or one value per block).
    init : str
        ``ori``, ``ri`` or ``wmi``.
    scope : str
        ``ffn``, ``attention`` or ``both``.
    blocks : list or None
        The transformer blocks masked; None: all.
    seed : int or None
        Seed of the score initialisation; None: the run's ``seed``.

    Example
    -------
    >>> Masks(sparsity=[0.1, 0.3]).sparsity
    0.2
    """

    file_name = TASK_FILE

    def __init__(self, sparsity=0.1, init="ori", scope="ffn", blocks=None, seed=None):
        values = sparsity if isinstance(sparsity, (list, tuple)) else [sparsity]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and 0 <= v < 1 for v in values):
            raise ValueError(f"sparsity={sparsity!r}: a share of each layer's weights removed, "
                             f"in [0, 1), or a list of one per masked block")
        self.options = {"sparsity": sparsity, "init": init, "scope": scope, "blocks": blocks}
        self.seed = seed

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``."""
        seed = self.seed if self.seed is not None else hparams.get("seed", 0)
        names = add_masks(ssl, seed=seed, **self.options)
        logger.info("Learned masks on %d layers (%s), backbone weights frozen", len(names),
                    self.options)

    def deployable(self, ssl):
        """See ``Strategy.deployable``."""
        return fold(ssl)

    def task_payload(self, path, ssl, head, info):
        """See ``Strategy.task_payload``."""

        return save_mask(path / self.file_name, ssl, head=head, **info, **self.options)

    @property
    def sparsity(self):
        """See ``Strategy.sparsity``."""
        return _mean(self.options["sparsity"])
