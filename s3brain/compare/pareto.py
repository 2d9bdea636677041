"""Error against cost: the Pareto front of a comparison's rows, its plot, and the best strategy
under a budget.

A row is on the front for a cost when no other row is at most as costly and at most as wrong,
and strictly better in one of the two. The costs a user budgets for are FLOPs, CPU latency in
fp32 and int8 (on the thread count the runs record) and bytes stored per task.

    python -m s3brain.compare.pareto studies/librispeech_comparison/comparison.csv \\
        --max latency_ms_10s=300 storage_bytes_per_task=1e6

Example
-------
>>> rows = [{"name": "a", "wer_test_clean": 80.0, "flops_10s": 3e9},
...         {"name": "b", "wer_test_clean": 85.0, "flops_10s": 1e9},
...         {"name": "c", "wer_test_clean": 86.0, "flops_10s": 2e9}]
>>> [r["name"] for r in pareto_front(rows, "flops_10s", "wer_test_clean")]
['b', 'a']
>>> [r["name"] for r in within_budget(rows, {"flops_10s": 2.5e9}, "wer_test_clean")]
['b', 'c']
"""

import argparse
import csv
import math
import sys
from pathlib import Path

#: The costs of the plot, with their axis labels (``{s}``: the measured audio length).
COSTS = (("flops_{s}s", "GFLOPs for {s} s of audio", 1e-9),
         ("latency_ms_{s}s", "CPU latency fp32, ms for {s} s", 1.0),
         ("latency_ms_{s}s_int8", "CPU latency int8, ms for {s} s", 1.0),
         ("storage_bytes_per_task", "MB stored per task", 1e-6))


def _number(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _better(higher_is_better):
    return (lambda a, b: a >= b) if higher_is_better else (lambda a, b: a <= b)


def pareto_front(rows, cost, metric, higher_is_better=False):
    """The rows no other row beats in both ``cost`` and ``metric``, cheapest first.

    Arguments
    ---------
    rows : list of dict
        Table rows (a comparison's, pooled over seeds or not).
    cost : str
        The cost key (lower is better).
    metric : str
        The error or accuracy key.
    higher_is_better : bool
        True for an accuracy.

    Returns
    -------
    list of dict
    """
    at_least = _better(higher_is_better)
    points = [r for r in rows if _number(r.get(cost)) is not None
              and _number(r.get(metric)) is not None]
    front = []
    for r in points:
        c, m = _number(r[cost]), _number(r[metric])
        dominated = any(_number(o[cost]) <= c and at_least(_number(o[metric]), m)
                        and (_number(o[cost]) < c or _number(o[metric]) != m)
                        for o in points if o is not r)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: _number(r[cost]))


def within_budget(rows, budget, metric, higher_is_better=False):
    """The rows within every limit of ``budget`` (``{cost key: most allowed}``), best
    ``metric`` first; a row that lacks a budgeted cost is left out."""
    fits = [r for r in rows if _number(r.get(metric)) is not None
            and all(_number(r.get(k)) is not None and _number(r[k]) <= v
                    for k, v in budget.items())]
    return sorted(fits, key=lambda r: _number(r[metric]), reverse=higher_is_better)


def plot_pareto(rows, path, metric, seconds=10, higher_is_better=False, title=None):
    """One panel per cost of ``COSTS`` that the rows have: every row a point with its spread
    over seeds (``<metric>_std``) as error bars, the Pareto front ringed and joined by a line,
    costs on a log scale where they span more than 20x. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    costs = [(k.format(s=f"{seconds:g}"), label.format(s=f"{seconds:g}"), scale)
             for k, label, scale in COSTS]
    costs = [c for c in costs if any(_number(r.get(c[0])) for r in rows)]
    fig, axes = plt.subplots(1, len(costs), figsize=(3.6 * len(costs), 3.8), sharey=True,
                             squeeze=False)
    colours = plt.get_cmap("tab10").colors
    names = list(dict.fromkeys(r["name"] for r in rows))
    for ax, (cost, label, scale) in zip(axes[0], costs):
        for r in rows:
            x, y = _number(r.get(cost)), _number(r.get(metric))
            if x is None or y is None:
                continue
            colour = colours[names.index(r["name"]) % len(colours)]
            ax.errorbar(x * scale, y, yerr=_number(r.get(f"{metric}_std")), marker="o",
                        color=colour, capsize=3, linestyle="none", label=r["name"])
        front = pareto_front(rows, cost, metric, higher_is_better)
        ax.plot([_number(r[cost]) * scale for r in front], [_number(r[metric]) for r in front],
                color="black", linewidth=1, alpha=0.6, drawstyle="steps-post",
                label="Pareto front")
        for r in front:
            ax.plot(_number(r[cost]) * scale, _number(r[metric]), marker="o", markersize=11,
                    markerfacecolor="none", markeredgecolor="black", linestyle="none")
        values = [_number(r.get(cost)) for r in rows if _number(r.get(cost))]
        if values and max(values) / min(values) > 20:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"{metric} %")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def budget_report(rows, budget, metric):
    """The text the budget query prints, and the rows within ``budget`` (best first)."""
    fits = within_budget(rows, budget, metric, metric.startswith(("accuracy", "f1")))
    limits = ", ".join(f"{k} <= {v:,.0f}" for k, v in budget.items()) or "no limit"
    lines = [f"{len(fits)} of {len(rows)} rows within {limits}, best {metric} first:"]
    for r in fits:
        costs = "  ".join(f"{k}={_number(r[k]):,.0f}" for k in budget)
        spread = f" ± {_number(r[f'{metric}_std']):.2f}" \
            if _number(r.get(f"{metric}_std")) is not None else ""
        against = f"  vs {r['reference']}: {_text(r.get(f'd_{metric}'))} over utterances" \
            if r.get(f"d_{metric}") else ""
        if r.get(f"s_{metric}"):
            against += f", {_text(r[f's_{metric}'])} over seeds"
        lines.append(f"  {r['name']:<18} {metric} {_number(r[metric]):.2f}{spread}  "
                     f"{costs}{against}")
    return "\n".join(lines), fits


def _text(interval):
    """An interval as a CSV holds it (text) or as the rows hold it (dict)."""
    if isinstance(interval, dict):
        mark = " *" if interval["excludes_zero"] else ""
        return (f"{interval['difference']:+.2f} [{interval['low']:+.2f}, "
                f"{interval['high']:+.2f}]{mark}")
    return interval


def read_rows(path):
    """The rows of a comparison's CSV (``write_tables``)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _limit(text):
    key, _, value = text.partition("=")
    if not value or _number(value) is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=NUMBER, e.g. latency_ms_10s=300")
    return key, float(value)


def main(argv=None):
    """The command line, ``python -m s3brain.compare.pareto CSV --max KEY=VALUE``: the rows
    within the budget, best first, with their spread and intervals against the reference; the Pareto front of each
    budgeted cost when no limit is given."""
    parser = argparse.ArgumentParser(prog="python -m s3brain.compare.pareto",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("table", type=Path, help="a comparison's CSV (comparison.csv)")
    parser.add_argument("--max", type=_limit, nargs="*", default=[], metavar="KEY=VALUE",
                        help="most allowed of a cost key (latency_ms_10s=300, "
                             "storage_bytes_per_task=1e6, flops_10s=2e9, latency_ms_10s_int8=..)")
    parser.add_argument("--metric", default=None, help="default: the rows' primary metric")
    args = parser.parse_args(argv)
    if not args.table.is_file():
        parser.error(f"{args.table}: no such table (make it with python -m s3brain.compare)")
    rows = read_rows(args.table)
    metric = args.metric or next((r["primary_metric"] for r in rows if r.get("primary_metric")),
                                 "wer_test_clean")
    budget = dict(args.max)
    unknown = [k for k in budget if rows and k not in rows[0]]
    if unknown:
        parser.error(f"the table has no column {unknown[0]!r}; costs: "
                     f"{[k for k in rows[0] if k.startswith(('flops', 'latency', 'storage'))]}")
    text, fits = budget_report(rows, budget, metric)
    print(text)
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
