"""Strategies: what a fine-tuning run does to the backbone beyond training its weights.

A run's yaml lists them (``strategies: [!new:s3brain.strategies.Masks {sparsity: 0.1}]``);
every recipe's ``Brain`` calls the same hooks of each (``s3brain.strategies.base.Strategy``)
and never asks which strategy it runs. One module, or one folder, per method holds its
mechanism, its strategy class and how it is deployed and exported:

- ``init_from``: start from an earlier run's checkpoint;
- ``s3router/``: S3-Router's learned masks (``masks``), the mask bank (``mask_bank``), the
  mask analysis (``analysis``), the strategy ``Masks``;
- ``pruning/``: OMP, IMP, PARP (``schedules``), structured pruning and SAFARI with the
  physically shrunk model (``structured``), the strategy ``Pruning``; pruning CNN channels,
  heads and FFN units to a FLOPs budget of the whole backbone (``budget``), ``BudgetPruning``;
- ``token_dropping``: SALAD and the uniform / random baselines, ``TokenDropping``;
- ``distillation``: layer-wise distillation (S6-DAMON), ``Distillation``, with or without
  token dropping;
- ``token_merging/``: token merging and adaptive skip between blocks, their shared base;
- ``early_exit``, ``downsampling``, ``adapters`` (Houlsby adapters and LoRA), ``top_blocks``.

The classes are importable from here, the path users' yamls name.
"""

from s3brain.strategies.adapters import Adapters, LoRA
from s3brain.strategies.base import (
                                     Strategy,
                                     deployable,
                                     encode,
                                     run_sparsity,
                                     setup_strategies,
                                     strategy_modules,
                                     task_payload,
)
from s3brain.strategies.distillation import Distillation
from s3brain.strategies.downsampling import DownsampledBackbone, Downsampling
from s3brain.strategies.early_exit import EarlyExit
from s3brain.strategies.init_from import InitFrom
from s3brain.strategies.pruning.budget import BudgetPruning
from s3brain.strategies.pruning.strategy import Pruning
from s3brain.strategies.s3router.strategy import Masks
from s3brain.strategies.token_dropping import DroppedFramesBackbone, TokenDropping
from s3brain.strategies.token_merging.adaptive_skip import AdaptiveSkip
from s3brain.strategies.token_merging.merging import TokenMerging
from s3brain.strategies.top_blocks import TopBlocks

__all__ = ["Adapters", "AdaptiveSkip", "BudgetPruning", "Distillation", "DownsampledBackbone",
           "Downsampling", "DroppedFramesBackbone", "EarlyExit", "InitFrom", "LoRA", "Masks", "Pruning",
           "Strategy", "TokenDropping", "TokenMerging", "TopBlocks", "deployable", "encode",
           "run_sparsity", "setup_strategies", "strategy_modules", "task_payload"]
