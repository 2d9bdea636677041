"""Tables (Markdown and CSV) and plots (PNG) of a comparison's rows.

Example
-------
>>> rows = [{"name": "weight_ft", "status": "ok", "wer_test_clean": 80.0, "flops_10s": 2.8e9,
...          "sparsity": 0.0},
...         {"name": "s3router", "status": "failed (exit 1)", "wer_test_clean": None}]
>>> print(markdown_table(rows, ["name", "status", "wer_test_clean", "flops_10s"]))
| name | status | wer_test_clean | flops_10s |
| --- | --- | --- | --- |
| weight_ft | ok | 80.0 | 2.80 G |
| s3router | failed (exit 1) |  |  |
"""

import csv
from pathlib import Path

from s3brain.compare.collect import COLUMNS, WHERE, primary_metric


def columns_for(rows):
    """The table's columns for the runs of any task, from their results: name and status,
    where trained, sparsity, every test metric (``metric_keys``), then parameters and the cost
    on the measured audio length (``cost_seconds``), storage per task and training time.

    Arguments
    ---------
    rows : list of dict
        Table rows (``row_for``).

    Returns
    -------
    list of str

    Example
    -------
    >>> columns_for([{"task": "KS", "metric_keys": ["accuracy_test"], "cost_seconds": 1}])[:6]
    ['name', 'status', 'strategy', 'task', 'sparsity', 'accuracy_test']
    """
    if not any(r.get("metric_keys") for r in rows):
        return list(COLUMNS)  # results written before the format had metric_keys
    metrics = dict.fromkeys(k for r in rows for k in r.get("metric_keys") or ()
                            if not k.startswith("exit_rtf"))
    seconds = next((r["cost_seconds"] for r in rows if r.get("cost_seconds")), 10)
    cost = [f"{k}_{seconds:g}s" for k in ("flops", "latency_ms")] + ["rtf"] + [
        f"{k}_{seconds:g}s" for k in ("onnx_latency_ms", "peak_memory_mb")]
    if any(r.get(f"latency_ms_{seconds:g}s_int8") is not None for r in rows):
        cost += [f"latency_ms_{seconds:g}s_int8", "rtf_int8"]  # the int8 deployment beside
    where = [k for k in WHERE if any(r.get(k) is not None for r in rows)]
    return ["name", "status", "strategy", *where, "sparsity", *metrics, "params_total",
            "params_trainable", *cost, "storage_bytes_per_task", "train_seconds"]


def markdown_table(rows, columns=COLUMNS):
    """A Markdown table of ``rows`` with one column per key in ``columns``.

    Large counts (FLOPs, parameters, bytes) are written with a k, M or G suffix; missing
    values are left empty. See the module's example.

    Arguments
    ---------
    rows : list of dict
        The rows, as ``row_for`` makes them.
    columns : list of str
        The keys to show, in order.

    Returns
    -------
    table : str
        The table, one line per row after the header and separator lines.
    """

    def cell(value):
        """One value as table text."""
        if value is None:
            return ""
        if isinstance(value, dict):  # a bootstrap interval (s3brain.compare.stats.paired_bootstrap)
            return interval_text(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for least, size, prefix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
                if abs(value) >= least:  # counts: FLOPs, parameters, bytes
                    return f"{value / size:.2f} {prefix}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    def shown(row, column):
        """A cell, with ``+- std`` when the row has the column's spread over seeds (metrics;
        counts such as FLOPs and parameters are the same for every seed)."""
        value, std = row.get(column), row.get(f"{column}_std")
        if std is None or not isinstance(value, float) or abs(value) >= 1e4:
            return cell(value)
        return f"{value:.4g} ± {std:.2g}"

    lines += ["| " + " | ".join(shown(row, c) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def mean_std_text(row, key, digits=2):
    """``mean ± std`` of a pooled row's ``key`` (its ``<key>_std`` from the seeds), the mean
    alone without one, ``""`` when the row lacks it.

    Example
    -------
    >>> mean_std_text({"wer": 80.954, "wer_std": 0.5}, "wer"), mean_std_text({}, "wer")
    ('80.95 ± 0.50', '')
    """
    value = row.get(key)
    if value is None:
        return ""
    spread = row.get(f"{key}_std")
    return f"{value:.{digits}f}" + (f" ± {spread:.{digits}f}" if spread is not None else "")


def interval_text(interval):
    """``+d.dd [+l.ll, +h.hh]`` for a ``paired_bootstrap`` result, `` *`` when it excludes 0.

    Arguments
    ---------
    interval : dict
        ``difference``, ``low``, ``high``, ``excludes_zero``.

    Returns
    -------
    str
        The interval as table text.

    Example
    -------
    >>> interval_text({"difference": -1.5, "low": -2.25, "high": -0.5, "excludes_zero": True})
    '-1.50 [-2.25, -0.50] *'
    """
    mark = " *" if interval["excludes_zero"] else ""
    return (f"{interval['difference']:+.2f} [{interval['low']:+.2f}, {interval['high']:+.2f}]"
            f"{mark}")


def write_tables(rows, out, stem="comparison", columns=None):
    """``<stem>.md`` (``columns``, default ``columns_for(rows)``) and ``<stem>.csv`` (every
    column) in ``out``.

    Arguments
    ---------
    rows : list of dict
        The rows.
    out : str or Path
        The folder.
    stem : str
        The files' name.
    columns : list of str, optional
        The Markdown table's columns.

    Returns
    -------
    tuple
        The two paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = columns or columns_for(rows)
    md, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
    md.write_text(markdown_table(rows, columns) + "\n")
    extra = [k for k in dict.fromkeys(k for r in rows for k in r)
             if k not in columns and k != "metric_keys"]
    with open(csv_path, "w", newline="") as f:  # seeds: the stds and intervals after the table's
        writer = csv.DictWriter(f, list(columns) + extra, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: interval_text(v) if isinstance(v, dict) else v
                          for k, v in r.items()} for r in rows)
    return md, csv_path


def plot(rows, path, x=None, xlabel=None, scale=1e-9):
    """The primary metric (``wer_test_clean``, ``per_test``, ``accuracy_test``) of every
    finished row against ``x`` (default: FLOPs on the measured audio length): one point per row,
    told apart by colour and marker in a legend (many strategies share the dense model's FLOPs),
    error bars when the rows have a spread over seeds.

    Arguments
    ---------
    rows : list of dict
        The rows.
    path : str or Path
        The PNG file.
    x : str, optional
        The key on the x axis.
    xlabel : str, optional
        Its label.
    scale : float
        Factor applied to ``x``.

    Returns
    -------
    str or Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("primary_metric") or r.get("wer_test_clean") is not None]
    y = primary_metric(done[0]) if done else "wer_test_clean"
    if x is None:
        seconds = next((r["cost_seconds"] for r in rows if r.get("cost_seconds")), 10)
        x, xlabel = f"flops_{seconds:g}s", f"GFLOPs for {seconds:g} s of audio"
    points = [r for r in rows if r.get(y) is not None and r.get(x) is not None]
    colours = plt.get_cmap("tab20").colors
    markers = "os^Dv<>PX*ph"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, r in enumerate(points):
        ax.errorbar(r[x] * scale, r[y], yerr=r.get(f"{y}_std"),
                    color=colours[i % len(colours)], marker=markers[i % len(markers)],
                    markersize=6, capsize=3, linestyle="none", label=r["name"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{y} %" + (" (greedy)" if y.startswith(("wer", "per")) else ""))
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(rows, out):
    """The primary metric against FLOPs and against sparsity, named after the metric
    (``wer_vs_flops.png``, ``per_vs_sparsity.png``, ``accuracy_vs_flops.png``).

    Arguments
    ---------
    rows : list of dict
        The rows.
    out : Path
        The folder.

    Returns
    -------
    list of Path
    """
    done = [r for r in rows if r.get("primary_metric")]
    name = primary_metric(done[0] if done else {}).split("_")[0]
    return [plot(rows, out / f"{name}_vs_flops.png"),
            plot(rows, out / f"{name}_vs_sparsity.png", x="sparsity", xlabel="sparsity",
                 scale=1.0)]
