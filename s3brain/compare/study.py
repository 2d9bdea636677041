"""A recipe's strategies compared over seeds, as a study folder: ``study.json`` (which recipe,
yamls, seeds and overrides; which metrics the tables show), ``records/`` (each run's
``results.json`` and per-utterance errors, no checkpoints), and the tables and plots made from
them. The same folder reruns the study (``--run``): finished runs are reused, so an interrupted
study continues.

``study.json``::

    {"recipe": "recipes/LibriSpeech", "yamls": ["weight_ft.yaml", "s3router.yaml"],
     "seeds": [1986, 1987, 1988], "overrides": [], "corpus": "realtext",
     "metric": "wer_test_clean",
     "columns": {"wer_test_clean": "test-clean WER greedy", ...},
     "intervals": {"wer_test_clean": "test-clean greedy", ...},
     "title": "LibriSpeech recipe", "recorded": "2026-12-06"}

- ``metric``: the figure the Pareto plot draws (an error rate; with ``"higher_is_better":
  true``, an accuracy);
- ``columns``: the error rates of the results table (mean ± std over the seeds), in order; the
  cost columns (FLOPs, CPU latency fp32 / int8, bytes per task) follow them;
- ``intervals``: the differences against each row's reference shown with their paired
  intervals (``d_<key>`` over the test utterances, ``s_<key>`` over the seeds).

Example
-------
>>> import json, tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "study.json").write_text(json.dumps({"recipe": "recipes/X",
...     "yamls": ["a.yaml"], "seeds": [1], "overrides": [], "corpus": "c", "metric": "per_test",
...     "columns": {"per_test": "PER"}, "intervals": {"per_test": "test"}}))
>>> study = RecipeStudy(folder)
>>> print(study.results_table([{"name": "a", "per_test": 20.0, "per_test_std": 0.5,
...     "flops_10s": 2e9, "latency_ms_10s": 100, "latency_ms_10s_int8": 60,
...     "storage_bytes_per_task": 1000}]).splitlines()[-1])
| `a.yaml` | 20.00 ± 0.50 | 2.00 | 100 / 60 | 1,000 |
"""

import argparse
import datetime
import json
from pathlib import Path

from s3brain.compare.cli import compare_seeds
from s3brain.compare.pareto import plot_pareto
from s3brain.compare.records import record_comparison, size_of
from s3brain.compare.tables import interval_text, markdown_table, mean_std_text

REPO = Path(__file__).resolve().parents[2]
COST_HEADERS = ("GFLOPs / {s} s", "latency fp32 / int8 (ms, {s} s, 1 thread)", "bytes per task")


def cost_seconds(pooled):
    """The audio length the rows' cost is measured on (``cost_seconds``: 1 s for keyword
    spotting's clips, 10 s elsewhere), as text.

    Example
    -------
    >>> cost_seconds([{"cost_seconds": 1.0}]), cost_seconds([{}])
    ('1', '10')
    """
    seconds = next((r["cost_seconds"] for r in pooled if r.get("cost_seconds")), 10)
    return f"{seconds:g}"


def _number_text(value, fmt):
    """``value`` formatted, or ``""`` when a run did not measure it."""
    return "" if value is None else format(value, fmt)


class RecipeStudy:
    """A study folder of one recipe's strategies over seeds (see the module's docstring).

    Arguments
    ---------
    folder : Path
        The study's folder (holds ``study.json`` and ``records/``).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.records = self.folder / "records"

    @property
    def spec_path(self):
        """``study.json``."""
        return self.folder / "study.json"

    def spec(self):
        """The study's definition (``study.json``)."""
        return json.loads(self.spec_path.read_text())

    def rows(self, out=None, records=None):
        """The study's rows pooled over its seeds, from its records (``records/`` by default);
        writes ``comparison.md``/``.csv`` and the plots (``pareto.png``...) into ``out`` (the
        study's folder by default)."""
        study = self.spec()
        out = Path(out or self.folder)
        pooled, _ = compare_seeds(REPO / study["recipe"], study["yamls"], out, study["seeds"],
                                  overrides=study["overrides"], records=records or self.records)
        plot_pareto(pooled, out / "pareto.png", study["metric"], float(cost_seconds(pooled)),
                    higher_is_better=study.get("higher_is_better", False),
                    title=f"{study.get('title', study['recipe'])}, {study['corpus']}, "
                          f"{len(study['seeds'])} seeds (bars: std over seeds; latency on one "
                          "thread)")
        return pooled

    def results_table(self, pooled):
        """The recipe README's Results table: one row per strategy, the error rates of
        ``columns`` as mean ± std over the seeds, then the deployed model's cost."""
        columns, s = self.spec()["columns"], cost_seconds(pooled)
        lines = ["| hparams | " + " | ".join([*columns.values(),
                                              *(h.format(s=s) for h in COST_HEADERS)]) + " |",
                 "|" + " --- |" * (1 + len(columns) + len(COST_HEADERS))]
        for r in pooled:
            flops = r.get(f"flops_{s}s")
            cells = [mean_std_text(r, k) for k in columns] + [
                "" if flops is None else f"{flops / 1e9:.2f}",
                f"{_number_text(r.get(f'latency_ms_{s}s'), '.0f')} / "
                f"{_number_text(r.get(f'latency_ms_{s}s_int8'), '.0f')}",
                _number_text(r.get("storage_bytes_per_task"), ",.0f")]
            lines.append(f"| `{r['name']}.yaml` | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def intervals_table(self, pooled):
        """Each strategy against its reference: the difference in points for every key of
        ``intervals``; the paired bootstrap over the pooled test utterances, then the t interval
        over the seeds (* = excludes 0)."""
        labels = self.spec()["intervals"]
        lines = ["| hparams | against | " + " | ".join(
            f"{label} (utterances; seeds)" for label in labels.values()) + " |",
            "|" + " --- |" * (2 + len(labels))]
        for r in pooled:
            if not r.get("reference"):
                continue
            cells = [f"{interval_text(r[f'd_{k}'])}; {interval_text(r[f's_{k}'])}"
                     if r.get(f"d_{k}") and r.get(f"s_{k}") else "" for k in labels]
            lines.append(f"| `{r['name']}` | `{r['reference']}` | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def findings(self, pooled, unit="WER points"):
        """What the intervals support, one line per row: each difference resolved over the
        seeds (training noise counted), over the test utterances only, or not at all."""
        labels = self.spec()["intervals"]
        lines = []
        for r in pooled:
            if not r.get("reference"):
                continue
            parts = {"seeds": [], "utterances": [], "neither": []}
            for key, label in labels.items():
                d, s = r.get(f"d_{key}"), r.get(f"s_{key}")
                if not d:
                    continue
                which = "seeds" if s and s["excludes_zero"] else (
                    "utterances" if d["excludes_zero"] else "neither")
                parts[which].append(f"{label} {d['difference']:+.2f}")
            said = []
            if parts["seeds"]:
                said.append("larger than the seeds' noise: " + ", ".join(parts["seeds"]))
            if parts["utterances"]:
                said.append("resolved over the test utterances but not over the seeds: "
                            + ", ".join(parts["utterances"]))
            if parts["neither"]:
                said.append("not resolved: " + ", ".join(parts["neither"]))
            lines.append(f"- `{r['name']}` against `{r['reference']}` ({unit}): "
                         + "; ".join(said) + ".")
        return "\n".join(lines)

    def command_line(self):
        """Where the table comes from and how to make it again."""
        study = self.spec()
        script = next(self.folder.glob("*.py"), next(self.folder.parent.glob("*.py"), None))
        rerun = (f"`./s3env python {script.relative_to(REPO)} --run`" if script else
                 "`--run`")
        return (f"{len(study['seeds'])} seeds ({', '.join(map(str, study['seeds']))}), corpus "
                f"`{study['corpus']}`"
                + (f" (`{' '.join(study['overrides'])}`)" if study["overrides"] else "")
                + f", recorded {study.get('recorded', '?')}; made from "
                f"`{self.records.relative_to(REPO)}` by `./s3env python tools/docs.py`, rerun "
                f"by {rerun}")

    def default_out(self):
        """Where ``--run`` trains by default: ``results/<the study's path under studies/>``."""
        return REPO / "results" / self.folder.relative_to(REPO / "studies")

    def run(self, out, jobs=2):
        """Train every run that is not finished in ``out`` (hours), then rewrite the records
        from the runs and date them in ``study.json``."""
        study = self.spec()
        compare_seeds(REPO / study["recipe"], study["yamls"], out, study["seeds"],
                      overrides=study["overrides"], jobs=jobs)
        written = record_comparison(out, self.records)
        self.spec_path.write_text(json.dumps(
            {**study, "recorded": datetime.date.today().isoformat()}, indent=1,
            ensure_ascii=False) + "\n")
        return written

    def main(self, argv=None, description=None):
        """The study's command line: from records (seconds), or ``--run`` first."""
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--run", action="store_true",
                            help="train the runs (hours), then record")
        parser.add_argument("--out", type=Path,
                            default=self.default_out(),
                            help="where --run trains")
        parser.add_argument("--jobs", type=int, default=2)
        args = parser.parse_args(argv)
        if args.run:
            written = self.run(args.out, args.jobs)
            print(f"{len(written)} records, {size_of(self.records) / 1e3:.0f} kB")
        pooled = self.rows()
        study = self.spec()
        s = cost_seconds(pooled)
        print(markdown_table(pooled, ["name", "status", *study["columns"], f"flops_{s}s",
                                      f"latency_ms_{s}s", "storage_bytes_per_task"]))
        print(f"tables and plots in {self.folder.relative_to(REPO)}")
        return 0
