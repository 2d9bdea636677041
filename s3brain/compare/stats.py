"""Is a difference between two strategies larger than run-to-run noise?

- ``utterance_errors``: per-utterance word errors and reference lengths from the
  ``wer_<split>.txt`` file SpeechBrain's ``ErrorRateStats.write_stats`` writes at test time.
- ``paired_bootstrap``: the 95 % interval of the corpus-level WER difference between a system and
  a reference, over the same test utterances, pooled over seeds (each seed's pair of runs is
  paired utterance by utterance; the utterances of every seed are resampled together).
- ``prediction_errors``: a 0/1 error per utterance from a classification run's
  ``predictions_test.csv`` (wrong when any target is), so that ``paired_bootstrap`` gives the
  interval of the error-rate difference, and ``paired_bootstrap_accuracy`` that of the accuracy
  difference (its negative).
- ``paired_bootstrap_files``: ``paired_bootstrap`` over seeds from pairs of such files, pairs
  with a missing file left out.
- ``mean_std``: mean and sample standard deviation over seeds.
- ``seed_interval``: the t interval of a difference from its value on each seed alone (training
  runs as the samples): the seed-to-seed noise the utterance bootstrap does not see.
- ``error_rate``: the corpus-level error rate (points) of one ``utterance_errors`` dict.
- ``paired_differences``: both intervals and the per-seed differences of pairs of such files.
- ``compare_rows`` / ``python -m s3brain.compare.stats REFERENCE SYSTEM ...``: any two rows of
  ``s3brain.compare`` folders (``<out>/<row>``, paired seed by seed) or cells of
  ``studies/s3router_sweep/s3router_sweep.py --seeds``, both intervals per per-utterance file: the
  pairs the comparison's own table does not give.

Example
-------
>>> ref = [{"a": (2, 10), "b": (1, 10), "c": (3, 10)}]
>>> sys_ = [{"a": (1, 10), "b": (0, 10), "c": (2, 10)}]
>>> result = paired_bootstrap(ref, sys_, resamples=200, seed=0)
>>> round(result["difference"], 2), result["excludes_zero"]
(-10.0, True)
>>> mean_std([80.0, 82.0, 84.0])
(82.0, 2.0)
>>> interval = seed_interval([6.26, 3.56, 4.03])
>>> round(interval["low"], 2), round(interval["high"], 2), interval["excludes_zero"]
(1.03, 8.2, True)
>>> ref = [{"a": (1, 1), "b": (0, 1), "c": (1, 1), "d": (0, 1)}]  # accuracy 50 %
>>> sys_ = [{"a": (0, 1), "b": (0, 1), "c": (0, 1), "d": (0, 1)}]  # accuracy 100 %
>>> paired_bootstrap_accuracy(ref, sys_, resamples=200)["difference"]
50.0
"""

import argparse
import re
import statistics
from pathlib import Path

import numpy as np

from s3brain.compare.records import (
    alignment_errors,
    prediction_rows,
    recorded_errors,
    recorded_stems,
    scored,
)


def utterance_errors(path):
    """``{utterance ID: (word errors, reference words)}`` from a ``wer_<split>.txt`` file.

    Arguments
    ---------
    path : str or Path
        The file ``ErrorRateStats.write_stats`` wrote (its ALIGNMENTS section has one
        ``<ID>, %WER x [ errors / words, ...]`` line per utterance), or where it was in a run
        whose record (``s3brain.compare.records``) holds it instead.

    Returns
    -------
    dict
        Errors and reference length per utterance.
    """
    found = alignment_errors(path) if Path(path).is_file() else recorded_errors(path)
    if not found:
        raise ValueError(f"{path}: no per-utterance lines (is it a wer_<split>.txt of a run?)")
    return found


def _pairs(reference, system):
    """Rows ``(reference errors, system errors, words)`` of every utterance scored in both runs
    of each seed, all seeds together."""
    rows = []
    for ref, sys_ in zip(reference, system):
        for uid in sorted(set(ref) & set(sys_)):
            if ref[uid][1] != sys_[uid][1]:
                raise ValueError(f"utterance {uid} has {ref[uid][1]} reference words in one run "
                                 f"and {sys_[uid][1]} in the other: not the same test set")
            rows.append((ref[uid][0], sys_[uid][0], ref[uid][1]))
    if not rows:
        raise ValueError("no utterance is scored in both runs")
    return np.array(rows, dtype=np.float64)


def paired_bootstrap(reference, system, resamples=1000, confidence=0.95, seed=0):
    """Paired bootstrap interval of ``WER(system) - WER(reference)`` in points.

    Arguments
    ---------
    reference, system : list of dict
        One ``utterance_errors`` dict per seed, in the same seed order.
    resamples : int
        Bootstrap resamples of the pooled utterances.
    confidence : float
        Coverage of the interval (percentile method).
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        ``difference`` (on all utterances), ``low``, ``high``, ``excludes_zero`` and
        ``utterances`` (pooled count).
    """
    if len(reference) != len(system):
        raise ValueError(f"{len(reference)} reference runs but {len(system)} system runs")
    rows = _pairs(reference, system)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(rows), size=(resamples, len(rows)))
    sampled = rows[index]  # [resamples, utterances, 3]
    words = sampled[..., 2].sum(1)
    diffs = 100.0 * (sampled[..., 1].sum(1) - sampled[..., 0].sum(1)) / words
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    difference = 100.0 * (rows[:, 1].sum() - rows[:, 0].sum()) / rows[:, 2].sum()
    return {"difference": float(difference), "low": float(low), "high": float(high),
            "excludes_zero": bool(low > 0 or high < 0), "utterances": len(rows)}


def mean_std(values):
    """Mean and sample standard deviation (0 for a single value) of ``values``.

    Arguments
    ---------
    values : list of float
        One value per seed.

    Returns
    -------
    tuple
        ``(mean, std)``.
    """
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def seed_interval(differences, confidence=0.95):
    """The t interval of the mean of per-seed differences (each from one pair of training runs):
    seeds as the samples, so training noise counts, as it does not in ``paired_bootstrap``.

    Arguments
    ---------
    differences : list of float
        The difference on each seed (``WER(system) - WER(reference)``), at least two.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    dict
        ``difference`` (the mean), ``low``, ``high``, ``excludes_zero`` and ``seeds``.
    """
    from scipy import stats

    if len(differences) < 2:
        raise ValueError(f"an interval over seeds needs 2 seeds or more, got {len(differences)}")
    mean, std = mean_std(differences)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(differences) - 1)) * std \
        / len(differences) ** 0.5
    return {"difference": mean, "low": mean - half, "high": mean + half,
            "excludes_zero": bool(mean - half > 0 or mean + half < 0),
            "seeds": len(differences)}


def error_rate(errors):
    """The corpus-level error rate in points of ``{ID: (errors, length)}``.

    Example
    -------
    >>> error_rate({"a": (1, 10), "b": (3, 10)})
    20.0
    """
    return 100.0 * sum(e for e, _ in errors.values()) / sum(n for _, n in errors.values())


def prediction_errors(path):
    """``{utterance ID: (0 or 1, 1)}`` from a classification run's ``predictions_test.csv``
    (``ID``, then ``<target>_predicted`` and ``<target>_true`` per target, as
    ``s3brain.training.utterance.ClassificationStats.write_predictions`` writes it): 1 when any
    target's prediction is wrong, as the recipes' accuracy counts an utterance. With one "word" per
    utterance, ``paired_bootstrap`` on these gives the error-rate (100 - accuracy) difference.

    Arguments
    ---------
    path : str or Path
        The predictions file.

    Returns
    -------
    dict
        A 0/1 error and a length of 1 per utterance.
    """
    found = prediction_rows(path) if Path(path).is_file() else recorded_errors(path)
    if not found:
        raise ValueError(f"{path}: no predictions (is it the predictions_test.csv of a run?)")
    return found


def paired_bootstrap_accuracy(reference, system, resamples=1000, confidence=0.95, seed=0):
    """Paired bootstrap interval of ``accuracy(system) - accuracy(reference)`` in points: the
    negative of ``paired_bootstrap`` on ``prediction_errors`` (same arguments and keys).

    Returns
    -------
    dict
        ``difference``, ``low``, ``high``, ``excludes_zero``, ``utterances``.
    """
    return negated(paired_bootstrap(reference, system, resamples, confidence, seed))


def negated(interval):
    """An interval of an error-rate difference as one of the accuracy difference (the same
    points, the other sign); None stays None.

    Example
    -------
    >>> negated({"difference": 2.0, "low": 1.0, "high": 3.0, "excludes_zero": True})
    {'difference': -2.0, 'low': -3.0, 'high': -1.0, 'excludes_zero': True}
    """
    if interval is None:
        return None
    return {**interval, "difference": 0.0 - interval["difference"],
            "low": 0.0 - interval["high"], "high": 0.0 - interval["low"]}


def seed_interval_files(pairs, read=utterance_errors, confidence=0.95):
    """``seed_interval`` of the error-rate differences (system - reference) of the seeds whose
    two per-utterance files both exist: the paired comparison of two training runs per seed
    with the seeds as the samples.

    Arguments
    ---------
    pairs : list of tuple
        ``(reference file, system file)`` per seed, as for ``paired_bootstrap_files``.
    read : callable
        ``path -> {ID: (errors, length)}``.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    dict or None
        The interval (``seed_interval``), None with fewer than two complete pairs.
    """
    pairs = [(a, b) for a, b in pairs if scored(a) and scored(b)]
    if len(pairs) < 2:
        return None
    return seed_interval([error_rate(read(b)) - error_rate(read(a)) for a, b in pairs],
                         confidence)


def paired_bootstrap_files(pairs, read=utterance_errors, accuracy=False, **options):
    """``paired_bootstrap`` (``paired_bootstrap_accuracy`` with ``accuracy``) over the seeds
    whose two per-utterance files both exist.

    Arguments
    ---------
    pairs : list of tuple
        ``(reference file, system file)`` per seed (``wer_test-clean.txt``, or
        ``predictions_test.csv`` with ``read=prediction_errors``).
    read : callable
        ``path -> {ID: (errors, length)}``.
    accuracy : bool
        Give the accuracy difference (system - reference) instead of the error-rate one.
    **options
        ``resamples``, ``confidence``, ``seed``.

    Returns
    -------
    dict or None
        The interval (``paired_bootstrap``), None when no pair is complete.
    """
    pairs = [(a, b) for a, b in pairs if scored(a) and scored(b)]
    if not pairs:
        return None
    bootstrap = paired_bootstrap_accuracy if accuracy else paired_bootstrap
    return bootstrap([read(a) for a, _ in pairs], [read(b) for _, b in pairs], **options)


def paired_differences(pairs, read=utterance_errors, confidence=0.95, resamples=1000):
    """The pairs of per-utterance files (one per seed) whose two files both exist, compared:
    the error-rate difference on each, ``paired_bootstrap`` over them pooled and
    ``seed_interval`` over their differences (None with one pair).

    Arguments
    ---------
    pairs : list of tuple
        ``(reference file, system file)`` per seed.
    read : callable
        ``path -> {ID: (errors, length)}``.
    confidence : float
        Coverage of both intervals.
    resamples : int
        Bootstrap resamples.

    Returns
    -------
    dict or None
        ``differences`` (list, in the pairs' order), ``bootstrap``, ``seeds``; None when no
        pair is complete.
    """
    errors = [(read(a), read(b)) for a, b in pairs if scored(a) and scored(b)]
    if not errors:
        return None
    differences = [error_rate(b) - error_rate(a) for a, b in errors]
    return {"differences": differences,
            "bootstrap": paired_bootstrap([a for a, _ in errors], [b for _, b in errors],
                                          resamples, confidence),
            "seeds": seed_interval(differences, confidence) if len(errors) > 1 else None}


def seed_runs(row):
    """``{seed: run folder}`` of one row of a comparison: ``<out>/<row>`` stands for the
    ``<out>/seed<S>/<row>`` folders ``python -m s3brain.compare --seeds`` writes. A run folder
    with such siblings is the layout of ``studies/s3router_sweep/s3router_sweep.py --seeds`` (the
    yamls' own seed in ``<out>/<row>``, the others in ``<out>/seed<S>/<row>``): it joins them under
    the seed its ``hyperparams.yaml`` ran with. A run folder without siblings is one seed, shown as
    ``-``.

    Arguments
    ---------
    row : str or Path
        ``<comparison folder>/<row name>`` or a run folder.

    Returns
    -------
    dict
        Seed (str) to folder, in seed order; empty when nothing is found.

    Raises
    ------
    ValueError
        When a run folder with seed siblings has no readable seed, or one of theirs.
    """
    row = Path(row)
    found = {p.parent.name[len("seed"):]: p for p in row.parent.glob(f"seed*/{row.name}")
             if p.is_dir()}
    if row.is_dir() and _scored_files(row):
        if not found:
            return {"-": row}
        seed = run_seed(row)
        if seed is None or seed in found:
            raise ValueError(f"{row}: its seed ({seed or 'not in hyperparams.yaml'}) cannot "
                             f"join its siblings' ({', '.join(sorted(found))})")
        found[seed] = row
    return dict(sorted(found.items()))


def run_seed(folder):
    """The ``seed:`` a run's ``hyperparams.yaml`` records (str), or None."""
    path = Path(folder) / "hyperparams.yaml"
    if not path.exists():
        return None
    match = re.search(r"^seed:\s*(\S+)", path.read_text(), re.MULTILINE)
    return match.group(1) if match else None


def _scored_files(folder):
    """The per-utterance files of a run: ``s3brain.compare.error_files`` of the WER and PER
    kinds (greedy, then the LM decoding's), or ``predictions_test.csv`` for a classification
    run."""

    files = [p.name for kind in ("wer", "per") for p in error_files(folder, kind, lm=True).values()]
    files.sort(key=lambda name: name[4:].startswith("lm_"))
    if not files and scored(Path(folder) / "predictions_test.csv"):
        files = ["predictions_test.csv"]
    return files


def compare_rows(reference, system, confidence=0.95, resamples=1000):
    """``system`` minus ``reference`` for every per-utterance file both rows' runs have, over
    the seeds where both runs wrote it (a run still training has not): the difference on each
    seed, the paired bootstrap over the pooled utterances and the t interval over the seeds
    (None with one seed). Error rates (WER, CER, classification error) in points; lower is
    better.

    Arguments
    ---------
    reference, system : str or Path
        Rows as ``seed_runs`` takes them (they may come from two comparison folders).
    confidence : float
        Coverage of both intervals.
    resamples : int
        Bootstrap resamples.

    Returns
    -------
    list of dict
        Per file: ``file``, ``per_seed`` ({seed: difference}), ``bootstrap`` and ``seeds``.
    """
    ref_runs, sys_runs = seed_runs(reference), seed_runs(system)
    if ("-" in ref_runs) != ("-" in sys_runs) and ref_runs and sys_runs:
        raise ValueError(f"{reference} and {system}: a run folder pairs with a run folder, "
                         "a comparison row (<out>/<row>) with a comparison row")
    runs = {s: (ref_runs[s], sys_runs[s]) for s in ref_runs if s in sys_runs}
    if not runs:
        raise ValueError(f"no seed has a run of both {reference} ({', '.join(ref_runs) or 'none'})"
                         f" and {system} ({', '.join(sys_runs) or 'none'})")
    seeds = list(runs)
    found = []
    for name in dict.fromkeys(n for s in seeds for n in _scored_files(runs[s][0])):
        complete = [s for s in seeds
                    if scored(runs[s][0] / name) and scored(runs[s][1] / name)]
        if not complete:
            continue
        read = prediction_errors if name.endswith(".csv") else utterance_errors
        result = paired_differences([(runs[s][0] / name, runs[s][1] / name) for s in complete],
                                    read, confidence, resamples)
        found.append({"file": name, "per_seed": dict(zip(complete, result["differences"])),
                      "bootstrap": result["bootstrap"], "seeds": result["seeds"]})
    return found


def _interval(result):
    """``+1.23 [+0.45, +2.01] *`` (the star when the interval excludes 0); empty for None."""
    if result is None:
        return ""
    star = " *" if result["excludes_zero"] else ""
    return f"{result['difference']:+.2f} [{result['low']:+.2f}, {result['high']:+.2f}]{star}"


def rows_table(reference, systems, **options):
    """A markdown table of ``compare_rows`` for each system against ``reference``.

    Arguments
    ---------
    reference : str or Path
        The reference row.
    systems : list
        The rows compared with it.
    **options
        ``confidence``, ``resamples``.

    Returns
    -------
    str
        One table line per system and file.
    """
    lines = ["| row | file | per seed | by utterances | over seeds |", "|---|---|---|---|---|"]
    for system in systems:
        for result in compare_rows(reference, system, **options):
            per_seed = " / ".join(f"{d:+.2f}" for d in result["per_seed"].values())
            seeds = ", ".join(result["per_seed"])
            lines.append(f"| {system} | {result['file']} | {per_seed} ({seeds}) | "
                         f"{_interval(result['bootstrap'])} | {_interval(result['seeds'])} |")
    return "\n".join(lines)


def main(argv=None):
    """The command line: any two rows of one or two comparisons (``python -m s3brain.compare.stats
    REFERENCE SYSTEM [SYSTEM ...]``), paired seed by seed: the intervals ``s3brain.compare``
    gives each row against its reference, for the rows it did not pair.

    Arguments
    ---------
    argv : list of str
        The command line (``sys.argv[1:]`` when None).
    """

    parser = argparse.ArgumentParser(
        prog="python -m s3brain.compare.stats",
        description="Error-rate differences (system - reference, points) between rows of "
                    "s3brain.compare folders: <out>/<row> pairs <out>/seed<S>/<row> seed by "
                    "seed; a run folder of studies/s3router_sweep/s3router_sweep.py joins its seed<S>/ "
                    "siblings, any other run folder is one seed. '*': the interval excludes 0.")
    parser.add_argument("reference", type=Path)
    parser.add_argument("systems", type=Path, nargs="+")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        table = rows_table(args.reference, args.systems, confidence=args.confidence,
                           resamples=args.resamples)
    except ValueError as error:
        parser.error(str(error))
    print(f"against {args.reference}; {args.confidence:.0%} intervals")
    print(table)




def error_files(folder, metric, lm=False):
    """The per-utterance error files of a run for its primary metric's kind (SpeechBrain's
    ``ErrorRateStats.write_stats``: ``wer_test-clean.txt``, ``per_test.txt``), by split; the LM
    decoding's (``wer_lm_test-clean.txt``, as split ``lm_test-clean``) with ``lm``.

    Arguments
    ---------
    folder : Path
        The run's folder.
    metric : str
        Its primary metric (``wer_test_clean``).
    lm : bool
        Include the LM decoding's files.

    Returns
    -------
    dict
        ``{split: path}``.
    """
    prefix = metric.split("_")[0]
    stems = {p.stem for p in Path(folder).glob(f"{prefix}_*.txt")}
    stems |= {s for s in recorded_stems(folder) if s.startswith(f"{prefix}_")}
    return {s[len(prefix) + 1:]: Path(folder) / f"{s}.txt" for s in sorted(stems)
            if lm or not s.startswith(f"{prefix}_lm_")}


if __name__ == "__main__":
    main()
