#!/usr/bin/env python3
"""The CommonVoice recipe's strategies side by side, three seeds, on the recipe's defaults (the
embedded corpus's Common Voice part, German, the default backbone): phoneme error rate in fp32
and int8, FLOPs, CPU latency, bytes per language, and each strategy's paired intervals against
weight fine-tuning. The recipe README's Results table and Pareto plot are made from this study's
records.

    ./s3env python studies/commonvoice_comparison/commonvoice_comparison.py          # from records
    ./s3env python studies/commonvoice_comparison/commonvoice_comparison.py --run --jobs 2

Without ``--run`` nothing trains: the tables (``comparison.md``, ``comparison.csv``) and the plot
(``pareto.png``) are made again from ``records/`` in seconds. With ``--run`` every yaml of
``study.json`` runs once per seed (finished runs in ``--out`` are reused), then the records are
rewritten from the runs (``s3brain.compare.study.RecipeStudy``).
"""

import sys
from pathlib import Path

from s3brain.compare.study import RecipeStudy

STUDY = RecipeStudy(Path(__file__).resolve().parent)

if __name__ == "__main__":
    sys.exit(STUDY.main(description=__doc__.split("\n\n")[0]))
