"""Pruning: what is pruned (``structured``: unit masks and shrinking) apart from when
(``schedules``: OMP, IMP, PARP; ``structured``'s SAFARI and PARP schedules), the strategy
that runs any schedule in a recipe (``strategy.Pruning``), and pruning to a FLOPs budget of the
whole backbone, CNN channels included (``budget.BudgetPruning``)."""
