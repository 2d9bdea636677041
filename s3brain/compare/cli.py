"""Run, or collect when already done, several strategies of one recipe on the same data and
backbone, and write one comparison table (Markdown and CSV) and plots (PNG).

    python -m s3brain.compare recipes/LibriSpeech hparams/weight_ft.yaml hparams/s3router.yaml
    python -m s3brain.compare recipes/LibriSpeech --all -- --train_splits='["train-1h"]'
    python -m s3brain.compare recipes/LibriSpeech --all --seeds 1986 1987 1988 --jobs 2
    python -m s3brain.compare recipes/CommonVoice --all -- --language=de
    python -m s3brain.compare recipes/SUPERB/KS --all

Each strategy runs as ``<recipe>/train.py <yaml> --output_folder=<out>/<yaml stem>`` plus the
overrides after ``--``. Every recipe writes the same ``results.json`` format
(``s3brain.utils.results``): the table shows its test metrics (``metric_keys``) and its cost, and
the plots its ``primary_metric`` (WER, PER or accuracy). A run whose ``results.json`` holds its
primary metric is reused, not rerun, unless it started from another backbone than the command
asks for (its recorded ``ssl_hub`` against ``--ssl_hub`` or the yaml's): that row fails with one
line saying so, rather than mixing backbones in one table; a run
that fails becomes a row saying so. A yaml with an ``init_from`` key (the pruning strategies)
starts from this comparison's weight fine-tuning run, which then runs first; the fair dense
reference of such rows, the same extra epochs without the strategy
(``hparams/weight_ft_continued.yaml``, where the recipe has it), is run with them. A yaml with a
``salad_detector`` key (SALAD, S6-DAMON) gets a detector trained for this comparison by the
recipe's ``train_salad.py hparams/salad/detector.yaml`` with the weight fine-tuning run as its
teacher (once per seed, in ``<out>/salad_detector``).

With ``--seeds`` every strategy runs once per seed (``--seed=S``, in ``<out>/seed<S>/``) and the
table gives each metric as mean +- std over the seeds and, for each row against the reference
row (``--reference``, weight fine-tuning by default), the paired bootstrap 95 % interval of the
error-rate difference (WER, PER) over the test utterances, pooled over seeds
(``s3brain.compare.stats``), and the t interval of the same difference over the seeds' values
(``s_`` columns: training noise counted, as the utterance bootstrap cannot); a ``*`` marks an
interval that excludes 0. With the default reference, rows that start from the weight fine-tuning
run are compared with its continuation instead (the ``reference`` column says which). The plots get
error bars.

With ``--record RECORDS`` the finished runs' records (``s3brain.compare.records``: results and
per-utterance errors, no checkpoints) are written to ``RECORDS`` in the same layout; with
``--from-records RECORDS`` nothing runs and the tables, intervals and plots are made from them,
in seconds.

"""

import argparse
import concurrent.futures
import os
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from s3brain.compare.collect import (
    BASELINE,
    finished_results,
    pooled_over_seeds,
    primary_metric,
    row_for,
)
from s3brain.compare.launch import (
    add_executor_options,
    fair_reference,
    launcher_for,
    needs_baseline,
    needs_detector,
    run_strategy,
    train_detector,
    with_references,
)
from s3brain.compare.records import record_comparison, size_of
from s3brain.compare.tables import columns_for, markdown_table, plot_all, write_tables


def compare(recipe, yamls, out, overrides=(), threads=None, jobs=1, columns=None,
            launcher=None, records=None):
    """Run or collect each yaml of ``recipe``, ``jobs`` runs at a time (the weight fine-tuning
    run first and alone when others start from it or use it as a teacher); write the tables and plots; return the rows
    in the order of ``yamls``. With ``records`` (a folder of ``s3brain.compare.records`` in the
    layout of ``out``) nothing runs: the rows are the records', and ``out`` (None: nothing
    written) gets their tables and plots."""
    yamls = with_references(Path(recipe), yamls)
    if records is not None:
        rows = [row_for(Path(y).stem, *_recorded(Path(records) / Path(y).stem)) for y in yamls]
        if out is not None:
            write_tables(rows, out, columns=columns)
            plot_all(rows, out)
        return rows
    recipe, out = Path(recipe), Path(out)
    if threads is None and jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    progress = tqdm(total=len(yamls), desc="strategies", unit="run")

    def one(yaml):
        """Run or collect one yaml's strategy; its table row."""
        name = Path(yaml).stem
        extra = list(overrides)
        if needs_baseline(recipe / "hparams" / yaml):
            extra.append(f"--init_from={out / Path(BASELINE).stem}")
        start = time.time()
        results, status = None, None
        if needs_detector(recipe / "hparams" / yaml):
            with detector_lock:  # one detector per comparison, trained by the first that needs it
                detector, status = train_detector(recipe, out, overrides, threads, launcher)
            extra.append(f"--salad_detector={detector}")
            if not status.startswith("ok"):
                status = f"failed (SALAD detector: {status})"
        if status is None or status.startswith("ok"):
            results, status = run_strategy(recipe, yaml, out / name, extra, threads,
                                           launcher=launcher)
        row = row_for(name, results, status)
        progress.update()
        metric = primary_metric(row)
        tqdm.write(f"{name}: {status}, {metric} {row.get(metric)} "
                   f"({(time.time() - start) / 60:.1f} min)")
        return row

    detector_lock = threading.Lock()
    rows = {}
    rest = list(yamls)
    if rest and rest[0] == BASELINE and any(
            needs_baseline(recipe / "hparams" / y) or needs_detector(recipe / "hparams" / y)
            for y in rest[1:]):  # alone and first only when other runs start from it
        rows[BASELINE] = one(rest.pop(0))
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        rows.update(zip(rest, pool.map(one, rest)))
    progress.close()
    rows = [rows[y] for y in yamls]
    write_tables(rows, out, columns=columns)
    plot_all(rows, out)
    return rows


def _recorded(folder):
    """A record's results and its status: ``ok (record)``, or ``no record`` when absent."""
    results = finished_results(folder)
    return results, "ok (record)" if results else f"no record in {folder}"


def compare_seeds(recipe, yamls, out, seeds, reference=BASELINE, overrides=(), threads=None,
                  jobs=1, columns=None, launcher=None, records=None):
    """``compare`` once per seed (``--seed=<s>``, in ``out/seed<s>``), then the rows pooled over
    the seeds (``pooled_over_seeds``): tables and plots with error bars in ``out``. With
    ``records``, the seeds' rows and their per-utterance errors are read from there
    (``records/seed<s>/<strategy>``) and nothing runs.

    Returns
    -------
    list of dict
        The pooled rows.
    """
    out = Path(out)
    yamls = list(yamls)
    if Path(reference).name not in [Path(y).name for y in yamls]:
        yamls.insert(0, Path(reference).name)
    yamls = with_references(recipe, yamls)
    per_seed = {s: compare(recipe, yamls, None if records else out / f"seed{s}",
                           [*overrides, f"--seed={s}"], threads, jobs, columns, launcher,
                           None if records is None else Path(records) / f"seed{s}")
                for s in seeds}
    references = {Path(y).stem: fair_reference(recipe, y, reference, yamls) for y in yamls}
    rows = pooled_over_seeds(per_seed, records if records is not None else out, references)
    intervals = [c for c in dict.fromkeys(k for r in rows for k in r)
                 if c.startswith(("d_", "s_")) and any(r.get(c) for r in rows)]
    columns = [*(columns or columns_for(rows)), *(["reference"] if intervals else []),
               *intervals]
    write_tables(rows, out, columns=columns)
    plot_all(rows, out)
    return rows, columns


def main(argv=None):
    """Command line of ``python -m s3brain.compare`` (see the module's docstring).

    Arguments
    ---------
    argv : list of str, optional
        ``<recipe> [yamls ...] [--all] [--out ...] [--threads N] [--jobs N] [--columns ...]``,
        then ``--`` and overrides passed to every run; ``sys.argv[1:]`` when None.

    Returns
    -------
    exit_code : int
        0 when every strategy ran (or was reused), 1 otherwise.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m s3brain.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path, help="recipe folder (holds train.py and hparams/)")
    parser.add_argument("yamls", nargs="*", help="hparams files (names or paths)")
    parser.add_argument("--all", action="store_true", help="every yaml in <recipe>/hparams")
    parser.add_argument("--out", type=Path, default=Path("results") / "compare")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per run (default: all, or the cores shared by --jobs)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="run every strategy once per seed; mean +- std and paired "
                             "bootstrap intervals against --reference")
    parser.add_argument("--reference", default=BASELINE,
                        help=f"the row the intervals compare with (default: {BASELINE})")
    parser.add_argument("--from-records", type=Path, default=None, metavar="RECORDS",
                        help="make the tables and plots from records (s3brain.compare.records, "
                             "in the layout of --out) instead of running anything")
    parser.add_argument("--record", type=Path, default=None, metavar="RECORDS",
                        help="after the runs, write their records there (results.json and "
                             "per-utterance errors, no checkpoints)")
    add_executor_options(parser)
    parser.add_argument("--columns", nargs="+", default=None, metavar="KEY",
                        help="result keys shown in the Markdown table (the CSV has all of "
                             "them; default: the runs' metrics and cost, see columns_for)")
    args = parser.parse_args(argv)
    if not (args.recipe / "train.py").is_file():
        parser.error(f"{args.recipe} has no train.py")
    yamls = sorted(p.name for p in (args.recipe / "hparams").glob("*.yaml")) if args.all \
        else args.yamls
    if not yamls:
        parser.error("give hparams files or --all")
    missing = [y for y in yamls if not (args.recipe / "hparams" / Path(y).name).is_file()]
    if missing:
        parser.error(f"not in {args.recipe / 'hparams'}: {missing}")
    launcher = launcher_for(args, args.threads)
    if args.seeds:
        rows, columns = compare_seeds(args.recipe, yamls, args.out, args.seeds, args.reference,
                                      overrides, args.threads, args.jobs, args.columns,
                                      launcher, args.from_records)
        if args.record:
            print(f"{len(record_comparison(args.out, args.record))} records in {args.record} "
                  f"({size_of(args.record) / 1e3:.0f} kB)")
        print(markdown_table(rows, columns))
        print(f"+- : std over seeds {args.seeds}; d_<metric>: error-rate difference against "
              "the row's reference, paired bootstrap 95 % interval over the test "
              "utterances of every seed; s_<metric>: t interval over the seeds' differences "
              "(training noise counted); * = excludes 0")
        print(f"tables and plots in {args.out}")
        return 0 if all(r["status"].startswith(f"{len(args.seeds)}/") for r in rows) else 1
    rows = compare(args.recipe, yamls, args.out, overrides, args.threads, args.jobs,
                   args.columns, launcher, args.from_records)
    if args.record:
        print(f"{len(record_comparison(args.out, args.record))} records in {args.record}")
    print(markdown_table(rows, args.columns or columns_for(rows)))
    print(f"tables and plots in {args.out}")
    return 0 if all(r["status"].startswith("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
