"""Pruning: what is pruned (``structured``: unit masks and shrinking) apart from when
(``schedules``: OMP, IMP, PARP; ``structured``'s SAFARI and PARP schedules), and the strategy
that runs any schedule in a recipe (``strategy.Pruning``)."""
