"""Any pruning schedule as a strategy (``s3brain.strategies.pruning.schedules`` and
``structured``): its hooks run in every Brain, and a structured schedule's deployed model is
physically shrunk.
"""

from s3brain.strategies.base import Strategy, _mean
from s3brain.strategies.pruning.structured import StructuredOneShot, StructuredPARP, shrink
from s3brain.strategies.s3router.masks import fold


class Pruning(Strategy):
    """Any ``s3brain.strategies.pruning.schedules.PruningSchedule`` (OMP, IMP, PARP, and the structured
    ``StructuredOneShot``, ``StructuredPARP``, ``Safari``) as a strategy: its hooks run in every
    Brain, and a structured schedule's deployed model is physically shrunk.

    Arguments
    ---------
    schedule : s3brain.strategies.pruning.schedules.PruningSchedule
        The schedule.

    Example
    -------
    >>> from s3brain.strategies.pruning.structured import Safari
    >>> Pruning(Safari(sparsity=0.3)).structured
    True
    """

    keeps_backbone_weights = False

    def __init__(self, schedule):
        self.schedule = schedule

    @property
    def structured(self):
        """Whether the schedule removes whole units (neurons, heads): shrunk when deployed."""

        return isinstance(self.schedule, (StructuredOneShot, StructuredPARP))

    def setup(self, ssl, hparams):
        """See ``Strategy.setup``."""
        self.schedule.setup(ssl)

    def on_step(self, ssl, step):
        """See ``Strategy.on_step``."""
        self.schedule.on_step(ssl, step)

    def before_eval(self, ssl):
        """See ``Strategy.before_eval``."""
        self.schedule.before_eval(ssl)

    def at_target(self, step):
        """See ``Strategy.at_target``."""
        return self.schedule.at_target(step)

    def deployable(self, ssl):
        """See ``Strategy.deployable``."""
        if self.structured:

            shrink(fold(ssl))  # in place: the wrapper now holds the smaller model
        return ssl

    @property
    def sparsity(self):
        """See ``Strategy.sparsity``."""
        return _mean(self.schedule.sparsity)
