#!/usr/bin/env python3
"""The LibriSpeech recipe's strategies side by side, three seeds, on the recipe's defaults (the
real-sentence corpus, ``train-10m``, the default backbone): error greedy and with the LM, FLOPs,
CPU latency in fp32 and int8, bytes per task, and each strategy's paired intervals against its
reference. The recipe README's Results table, its Pareto plot and the budget query are made from
this study's records.

    ./s3env python studies/librispeech_comparison/librispeech_comparison.py          # from records
    ./s3env python studies/librispeech_comparison/librispeech_comparison.py --run --jobs 2

Without ``--run`` nothing trains: the tables (``comparison.md``, ``comparison.csv``) and plots
(``pareto.png``) are made again from ``records/`` in seconds. With ``--run`` every strategy of
``study.json`` runs once per seed through ``python -m s3brain.compare`` in ``--out`` (finished
runs are reused, so an interrupted study continues), then the records are rewritten from the runs
and the tables made (``s3brain.compare.study.RecipeStudy``).
"""

import sys
from pathlib import Path

from s3brain.compare.study import RecipeStudy

STUDY = RecipeStudy(Path(__file__).resolve().parent)

if __name__ == "__main__":
    sys.exit(STUDY.main(description=__doc__.split("\n\n")[0]))
