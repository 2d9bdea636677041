#!/usr/bin/env python3
"""One recipe of this project laid out as SpeechBrain lays out its recipes, and SpeechBrain's own
checks run on the result: how far the recipe is from a pull request to SpeechBrain.

    python tools/upstream_layout.py --recipe LibriSpeech --out /tmp/sb_tree
    python tools/upstream_layout.py --recipe LibriSpeech --out /tmp/sb_tree --recipes --keep
    python tools/upstream_layout.py --recipe LibriSpeech --recipes \\
        --filter Hparam_file=recipes/LibriSpeech/hparams/weight_ft.yaml

The tree it builds in ``--out`` (a fresh temporary folder by default) is a minimal
SpeechBrain-shaped checkout, not SpeechBrain itself (no SpeechBrain source tree is at hand
offline; SpeechBrain comes from the environment, as s3brain does):

- ``recipes/<Dataset>/<Task>/<method>/``: the recipe folder's files as git sees them (tracked or
  new, not ignored), its subfolders kept (``hparams/``, ``hparams/salad/``, ``pretrain/``: the
  scripts import what sits beside them), links copied as the files they point to (the SUPERB
  tasks' ``train.py``), and ``extra_requirements.txt``: ``s3brain`` and what its
  ``setup.cfg`` requires beyond what SpeechBrain requires. LibriSpeech and CommonVoice go to
  ``recipes/<Dataset>/ASR/<method>/``. SUPERB goes to ``recipes/SUPERB/<method>/<KS|SID|IC|PR>/``:
  its shared script reads which task it runs from the name of the folder it is started from, so
  the task folder stays the last part of the path. A recipe whose rows use another dataset's
  scripts gets that folder laid out too (CommonVoice's English teacher is LibriSpeech's
  ``train.py``);
- ``tests/recipes/<Dataset>.csv``: the recipe's rows of ``tests/recipes/``, their
  ``Script_file``, ``Hparam_file``, ``Data_prep_file`` and ``Readme_file`` (and any flag naming
  a file under ``recipes/``) rewritten to the new place; the runs' output folders stay under
  ``tests/tmp/``, as upstream's are;
- ``tests/consistency/`` and ``tests/utils/``: SpeechBrain's checks, copied unchanged from
  ``--upstream-checks`` (``<it>/speechbrain-tests/tests/``).

Then, from the tree's root, it runs SpeechBrain's checks against that tree:

1. ``pytest tests/consistency/test_recipe.py tests/consistency/test_yaml.py``: every yaml under
   ``recipes/<Dataset>/`` has a row with debug flags, every file a row names exists, every
   top-level yaml key is used by the row's script;
2. the docstring check, ``tests.utils.check_docstrings.check_docstrings('.', ['recipes'])``, over
   the laid-out recipes (the package itself is checked by ``../shared/upstream-checks/run``);
3. with ``--recipes``: SpeechBrain's recipe-test runner, ``tests.utils.recipe_tests.
   run_recipe_tests``, over the laid-out rows (``--device=cpu``; each row's debug run from the
   tree, its files and its ``performance_check``), restricted by ``--filter`` to the rows whose
   CSV fields match (minutes for all of them).

It prints what it laid out, one line per check and ``upstream layout: pass`` (exit 0) or
``upstream layout: FAIL`` (exit 1); a bad option or an ``--out`` that is not empty ends in one
``ERROR:`` line (exit 2). The tree is removed afterwards unless ``--keep``.
"""

import argparse
import configparser
import csv
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the recipes this tool lays out (``tests/recipes/<name>.csv``, ``recipes/<name>/``)
DATASETS = ("LibriSpeech", "CommonVoice", "SUPERB")
#: the task folder of each dataset's recipe folder; None: the method folder holds task folders
TASK_FOLDER = {"LibriSpeech": "ASR", "CommonVoice": "ASR", "SUPERB": None}
#: the fields of a row that name files of the recipe
PATH_FIELDS = ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file")
#: where the SpeechBrain checks are unless ``--upstream-checks`` says: beside the repository
DEFAULT_CHECKS = REPO.parent / "shared" / "upstream-checks"
#: SpeechBrain's checks, relative to the ``--upstream-checks`` folder
CHECKS_TESTS = Path("speechbrain-tests") / "tests"
CHECK_FOLDERS = ("consistency", "utils")
CONSISTENCY_TESTS = ("tests/consistency/test_recipe.py", "tests/consistency/test_yaml.py")
#: the level and logger name in front of a log line
LOG_PREFIX = re.compile(r"^[A-Z]+:[\w.]+:")
#: a path under recipes/ within a CSV field
RECIPE_PATH = re.compile(r"(?<![\w./-])recipes/[\w./-]+")
#: what the recipe runner logs that says which row runs, how long it took and what failed
RUNNER_LINES = re.compile(r"Running test|Error in|does not contain|does not exist|violated|"
                          r"No entries|No recipes|\.\.\. [0-9.]+s")


class LayoutError(Exception):
    """A recipe that cannot be laid out as asked (shown as one ``ERROR:`` line)."""


def method_folder(dataset, method):
    """Where a dataset's recipe folder goes in the tree.

    Arguments
    ---------
    dataset : str
        The dataset (``recipes/<dataset>/`` here).
    method : str
        The method folder's name (``S3Brain``).

    Returns
    -------
    str
        ``recipes/<dataset>/<task>/<method>``, or ``recipes/<dataset>/<method>`` for a dataset
        whose folder holds task folders.

    Example
    -------
    >>> method_folder("LibriSpeech", "S3Brain")
    'recipes/LibriSpeech/ASR/S3Brain'
    >>> method_folder("SUPERB", "S3Brain")
    'recipes/SUPERB/S3Brain'
    """
    task = TASK_FOLDER[dataset]
    return "/".join(part for part in ("recipes", dataset, task, method) if part)


def relocate(path, places):
    """A path of this repository's recipes as the tree has it.

    Arguments
    ---------
    path : str
        A path relative to the repository root (``recipes/LibriSpeech/train.py``), or one
        already in the tree.
    places : dict
        ``{dataset: method folder}`` of the datasets laid out.

    Returns
    -------
    str
        The path in the tree; unchanged when it is not in a folder laid out.

    Example
    -------
    >>> relocate("recipes/LibriSpeech/hparams/lora.yaml", {"LibriSpeech": "recipes/LibriSpeech/ASR/S3Brain"})
    'recipes/LibriSpeech/ASR/S3Brain/hparams/lora.yaml'
    >>> relocate("tests/tmp/LibriSpeech_lora", {"LibriSpeech": "recipes/LibriSpeech/ASR/S3Brain"})
    'tests/tmp/LibriSpeech_lora'
    >>> relocate("recipes/LibriSpeech/ASR/S3Brain/train.py", {"LibriSpeech": "recipes/LibriSpeech/ASR/S3Brain"})
    'recipes/LibriSpeech/ASR/S3Brain/train.py'
    """
    path = path.strip()
    parts = path.split("/")
    if len(parts) > 2 and parts[0] == "recipes" and parts[1] in places and \
            not path.startswith(places[parts[1]] + "/"):  # not there already
        return "/".join([places[parts[1]], *parts[2:]])
    return path


def relocate_text(text, places):
    """A CSV field with every path of a laid-out recipe folder in it relocated (the file
    fields, flags such as ``--init_from=recipes/...``, a ``performance`` note naming a README).

    Arguments
    ---------
    text : str
        The field.
    places : dict
        ``{dataset: method folder}`` of the datasets laid out.

    Returns
    -------
    str
        The field, paths relocated, the rest unchanged.

    Example
    -------
    >>> relocate_text("see recipes/SUPERB/README.md", {"SUPERB": "recipes/SUPERB/S3Brain"})
    'see recipes/SUPERB/S3Brain/README.md'
    >>> relocate_text("--debug --x=recipes/Other/a.csv", {"SUPERB": "recipes/SUPERB/S3Brain"})
    '--debug --x=recipes/Other/a.csv'
    """
    return RECIPE_PATH.sub(lambda m: relocate(m.group(0), places), text)


def read_index(dataset, repo=REPO):
    """A dataset's rows of ``tests/recipes/<dataset>.csv``.

    Arguments
    ---------
    dataset : str
        The CSV's stem.
    repo : Path
        The repository root.

    Returns
    -------
    tuple
        ``(columns, rows)``: the header and one dict per row.
    """
    path = Path(repo) / "tests" / "recipes" / f"{dataset}.csv"
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def datasets_used(dataset, rows):
    """The recipe folders a dataset's rows take files from, the dataset's own first.

    Arguments
    ---------
    dataset : str
        The dataset laid out.
    rows : list of dict
        Its rows.

    Returns
    -------
    list of str
        Dataset names (``recipes/<name>/``).
    """
    used = [dataset]
    for row in rows:
        for field in PATH_FIELDS:
            parts = row[field].strip().split("/")
            if len(parts) > 2 and parts[0] == "recipes" and parts[1] not in used:
                if parts[1] not in TASK_FOLDER:
                    raise LayoutError(f"{dataset}.csv names {row[field]}: no layout for "
                                      f"recipes/{parts[1]}/ (known: {', '.join(DATASETS)})")
                used.append(parts[1])
    return used


def recipe_files(folder, repo=REPO):
    """The files of a recipe folder as git sees the working tree: tracked or new, not ignored
    (no ``results/``, no ``__pycache__``).

    Arguments
    ---------
    folder : str
        The folder, relative to the repository root.
    repo : Path
        The repository root.

    Returns
    -------
    list of str
        Paths relative to the repository root, sorted.
    """
    try:
        listed = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard", "--", folder],
            check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise LayoutError(f"cannot list {folder} with git ({err}): run from a git checkout")
    return sorted({p for p in listed.split("\0") if p and os.path.lexists(Path(repo) / p)})


def copy_recipe(source, target, repo=REPO):
    """Copy a recipe folder's files, a link as the file (or folder) it points to.

    Arguments
    ---------
    source : str
        The recipe folder, relative to the repository root.
    target : Path
        Its place in the tree.
    repo : Path
        The repository root.

    Returns
    -------
    int
        How many files were copied.
    """
    count = 0
    for rel in recipe_files(source, repo):
        src, dst = Path(repo) / rel, Path(target) / Path(rel).relative_to(source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():  # a link to a folder
            shutil.copytree(src, dst, symlinks=False)
            count += sum(1 for p in dst.rglob("*") if p.is_file())
        else:
            shutil.copy(src, dst)  # follows a link: the file itself
            count += 1
    return count


def requirement_name(requirement):
    """The distribution name of a requirement line, normalized.

    Arguments
    ---------
    requirement : str
        ``transformers>=4.40``, ``Foo_Bar[x]; python_version<'3.10'``...

    Returns
    -------
    str
        ``transformers``, ``foo-bar``.

    Example
    -------
    >>> requirement_name("Foo_Bar[x]>=1.0; extra == 'dev'")
    'foo-bar'
    """
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_requirements(repo=REPO):
    """What a SpeechBrain checkout must install to run the recipes: this package, and what its
    ``setup.cfg`` requires that SpeechBrain (as installed here) does not.

    Arguments
    ---------
    repo : Path
        The repository root.

    Returns
    -------
    list of str
        Requirement lines, ``s3brain>=<version>`` first.
    """
    config = configparser.ConfigParser()
    config.read(Path(repo) / "setup.cfg", encoding="utf-8")
    name, version = config["metadata"]["name"], config["metadata"]["version"]
    required = [line.strip() for line in config["options"]["install_requires"].splitlines()
                if line.strip() and not line.strip().startswith("#")]
    try:
        speechbrains = [r for r in importlib.metadata.requires("speechbrain") or []
                        if "extra ==" not in r]
    except importlib.metadata.PackageNotFoundError:
        speechbrains = []
    known = {requirement_name(r) for r in speechbrains} | {"speechbrain"}
    return [f"{name}>={version}"] + [r for r in required if requirement_name(r) not in known]


def write_index(path, columns, rows):
    """Write rows in SpeechBrain's recipe-test CSV format.

    Arguments
    ---------
    path : Path
        The CSV file.
    columns : list of str
        The header.
    rows : list of dict
        The rows.
    """
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def output_folders(flags):
    """The ``--output_folder`` values of a row's flags.

    Arguments
    ---------
    flags : str
        The row's ``test_debug_flags``.

    Returns
    -------
    list of str
        The folders named (usually one).

    Example
    -------
    >>> output_folders("--debug --output_folder=tests/tmp/LibriSpeech_lora --x=1")
    ['tests/tmp/LibriSpeech_lora']
    """
    return re.findall(r"--output_folder[= ]\s*([^\s]+)", flags)


def lay_out(dataset, out, method="S3Brain", checks=None, repo=REPO):
    """Build the SpeechBrain-shaped tree of one dataset's recipe.

    Arguments
    ---------
    dataset : str
        ``LibriSpeech``, ``CommonVoice`` or ``SUPERB``.
    out : Path
        The tree's root: must not exist or be empty.
    method : str
        The method folder's name.
    checks : Path, optional
        The upstream-checks folder (holding ``speechbrain-tests/tests/``): its ``consistency``
        and ``utils`` are copied to the tree's ``tests/``. None: no checks copied.
    repo : Path
        The repository root.

    Returns
    -------
    dict
        ``folders`` (``[(source, method folder, files)]``), ``index`` (the CSV, relative to the
        tree), ``rows``, ``requirements`` (``extra_requirements.txt``'s lines), ``checks`` (the
        folders copied).
    """
    if dataset not in DATASETS:
        raise LayoutError(f"no recipe {dataset!r} (known: {', '.join(DATASETS)})")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", method):
        raise LayoutError(f"--method {method!r}: one folder name (letters, digits, _ . -)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LayoutError(f"{out} exists and is not an empty folder: give another --out")
    if checks is not None:
        missing = [f for f in CHECK_FOLDERS if not (Path(checks) / CHECKS_TESTS / f).is_dir()]
        if missing:
            raise LayoutError(f"no SpeechBrain checks in {checks} (wanted {CHECKS_TESTS}/"
                              f"{{{','.join(CHECK_FOLDERS)}}}): give --upstream-checks")
    columns, rows = read_index(dataset, repo)
    used = datasets_used(dataset, rows)
    places = {name: method_folder(name, method) for name in used}
    for row in rows:
        for folder in output_folders(row["test_debug_flags"]):
            if not folder.startswith("tests/tmp/"):
                raise LayoutError(f"{dataset}.csv: a row writes to {folder}, outside tests/tmp/"
                                  " (where upstream's recipe tests write)")

    out.mkdir(parents=True, exist_ok=True)
    requirements = extra_requirements(repo)
    summary = {"folders": [], "requirements": requirements, "checks": []}
    for name in used:
        target = out / places[name]
        files = copy_recipe(f"recipes/{name}", target, repo)
        (target / "extra_requirements.txt").write_text(
            "# what these recipes need beyond SpeechBrain\n" + "\n".join(requirements) + "\n",
            encoding="utf-8")
        summary["folders"].append((f"recipes/{name}", places[name], files + 1))

    for row in rows:
        for column in columns:
            row[column] = relocate_text(row[column] or "", places)
    index = Path("tests") / "recipes" / f"{dataset}.csv"
    (out / index).parent.mkdir(parents=True, exist_ok=True)
    write_index(out / index, columns, rows)
    summary.update(index=str(index), rows=len(rows))

    if checks is not None:
        for folder in CHECK_FOLDERS:
            shutil.copytree(Path(checks) / CHECKS_TESTS / folder, out / "tests" / folder)
            summary["checks"].append(f"tests/{folder}")
        (out / "tests" / "__init__.py").touch()  # the checks import each other as tests.*
    return summary


def _environment():
    """The checks' environment: this interpreter's folder first on PATH (the recipe runner
    starts ``python``), no pytest options inherited."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _run(argv, tree, on_line=None):
    """Run a command from the tree's root, its output kept (and passed line by line to
    ``on_line``); returns ``(exit status, output, seconds)``."""
    start = time.monotonic()
    with subprocess.Popen(argv, cwd=tree, env=_environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line)
    return proc.returncode, "".join(lines), time.monotonic() - start


def consistency_check(tree):
    """SpeechBrain's recipe and yaml consistency tests, run by pytest in the tree.

    Arguments
    ---------
    tree : Path
        The tree's root.

    Returns
    -------
    tuple
        ``(passed, output, seconds)``.
    """
    code, output, seconds = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
         "--rootdir", str(tree), *CONSISTENCY_TESTS], tree)
    return code == 0, output, seconds


def docstring_check(tree):
    """SpeechBrain's docstring check over the tree's ``recipes/``.

    Arguments
    ---------
    tree : Path
        The tree's root.

    Returns
    -------
    tuple
        ``(passed, output, seconds)``.
    """
    code, output, seconds = _run(
        [sys.executable, "-c", ("import sys; from tests.utils.check_docstrings import "
                                "check_docstrings; "
                                "sys.exit(0 if check_docstrings('.', ['recipes']) else 1)")],
        tree)
    return code == 0, output, seconds


def parse_filters(given, columns, places):
    """``--filter FIELD=VALUE`` options as the runner's ``filters_fields`` and ``filters``:
    values of one field are alternatives, different fields must all match.

    Arguments
    ---------
    given : list of str
        The options' values.
    columns : list of str
        The CSV's columns.
    places : dict
        ``{dataset: method folder}``: a file field's value may name the file as this repository
        does.

    Returns
    -------
    tuple
        ``(filters_fields, filters)``.

    Example
    -------
    >>> parse_filters(["Task=ASR-CTC", "Task=SSL-pretraining"], ["Task"], {})
    (['Task'], [['ASR-CTC', 'SSL-pretraining']])
    """
    chosen = {}
    for item in given or []:
        field, sep, value = item.partition("=")
        if not sep or field not in columns:
            raise LayoutError(f"--filter {item!r}: FIELD=VALUE, FIELD one of {', '.join(columns)}")
        if field in PATH_FIELDS:
            value = relocate(value, places)
        chosen.setdefault(field, []).append(value)
    fields = list(chosen)
    return fields, [chosen[f][0] if len(chosen[f]) == 1 else chosen[f] for f in fields]


def recipe_runs(tree, filters_fields=(), filters=(), echo=print):
    """SpeechBrain's recipe-test runner over the tree's rows (``--device=cpu``).

    Arguments
    ---------
    tree : Path
        The tree's root.
    filters_fields, filters : list
        The runner's row selection (``parse_filters``).
    echo : callable
        Called with each line of the runner's log that names a row, its time or a failure.

    Returns
    -------
    tuple
        ``(passed, output, seconds)``.
    """
    tree = Path(tree)
    for index in (tree / "tests" / "recipes").glob("*.csv"):
        with open(index, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                # the runner writes a row's stdout.txt into its output folder before the run
                for folder in output_folders(row["test_debug_flags"]):
                    (tree / folder).mkdir(parents=True, exist_ok=True)
    program = (
        "import json, sys\n"
        "from tests.utils.recipe_tests import run_recipe_tests\n"
        "fields, values = json.loads(sys.argv[1])\n"
        "sys.exit(0 if run_recipe_tests(run_opts='--device=cpu', output_folder='tests/tmp/',\n"
        "                               filters_fields=fields, filters=values) else 1)\n")
    code, output, seconds = _run(
        [sys.executable, "-c", program, json.dumps([list(filters_fields), list(filters)])],
        tree, lambda line: RUNNER_LINES.search(line) and echo(LOG_PREFIX.sub("", line.rstrip())))
    return code == 0, output, seconds


def _failure_lines(output, limit=40):
    """The lines of a check's output that say what failed (its last lines if none does)."""
    lines = [line for line in output.splitlines()
             if re.search(r"ERROR|Error|FAILED|failed|assert", line)]
    return (lines or output.splitlines())[-limit:]


def main(argv=None):
    """Lay out the recipe, run the checks, print the verdict.

    Arguments
    ---------
    argv : list of str, optional
        The command line (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        0: every check passed; 1: one failed; 2: nothing was checked (bad option, bad ``--out``).
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " The checks (SpeechBrain's recipe and yaml "
        "consistency tests, its docstring check, with --recipes its recipe-test runner) run "
        "against the minimal tree this tool builds in --out (the recipe at SpeechBrain's paths, "
        "its rows in tests/recipes/, SpeechBrain's tests/consistency and tests/utils), not a "
        "full SpeechBrain checkout.")
    parser.add_argument("--recipe", required=True, choices=DATASETS,
                        help="the recipe (tests/recipes/<RECIPE>.csv, recipes/<RECIPE>/)")
    parser.add_argument("--out", type=Path,
                        help="the tree's root, not existing or empty (default: a new temporary "
                        "folder)")
    parser.add_argument("--method", default="S3Brain",
                        help="the method folder: recipes/<Dataset>/<Task>/<METHOD>/ "
                        "(default: %(default)s)")
    parser.add_argument("--upstream-checks", type=Path, default=DEFAULT_CHECKS, help="the folder holding SpeechBrain's checks as "
                        "speechbrain-tests/tests/ (default: ../shared/upstream-checks from the "
                        "repository root)")
    parser.add_argument("--recipes", action="store_true",
                        help="also run SpeechBrain's recipe-test runner on the laid-out rows "
                        "(minutes)")
    parser.add_argument("--filter", action="append", metavar="FIELD=VALUE",
                        help="with --recipes, run only the rows whose CSV field FIELD is VALUE "
                        "(a file as this repository or the tree names it); repeat a field for "
                        "alternatives, give several fields to need them all. A row started "
                        "from another row's run (--init_from=tests/tmp/...) needs that row too")
    parser.add_argument("--keep", action="store_true",
                        help="keep the tree (and the runs under its tests/tmp/) afterwards")
    args = parser.parse_args(argv)

    created = args.out is None or not args.out.exists()
    out = (args.out or Path(tempfile.mkdtemp(prefix="upstream_layout."))).absolute()
    try:
        if args.filter and not args.recipes:
            raise LayoutError("--filter selects rows to run: give --recipes too")
        summary = lay_out(args.recipe, out, args.method, args.upstream_checks)
        columns, _ = read_index(args.recipe)
        places = {Path(s).name: m for s, m, _ in summary["folders"]}
        filters = parse_filters(args.filter, columns, places)
    except LayoutError as err:
        if created and out.exists() and not args.keep:
            shutil.rmtree(out)
        print(f"ERROR: {err}", file=sys.stderr)
        return 2

    print(f"laid out {args.recipe} in {out}:")
    for source, target, files in summary["folders"]:
        print(f"  {target}/  ({files} files, from {source}/)")
    print(f"  {summary['index']}  ({summary['rows']} rows, paths rewritten to the folders above)")
    print(f"  extra_requirements.txt: {', '.join(summary['requirements'])}")
    print(f"  {' and '.join(summary['checks'])}  (SpeechBrain's, from "
          f"{args.upstream_checks / CHECKS_TESTS})")
    print("checks, run from the tree's root (a minimal SpeechBrain-shaped tree, not a SpeechBrain "
          "checkout):", flush=True)

    results = []
    checks = [("recipe and yaml consistency (pytest " + " ".join(CONSISTENCY_TESTS) + ")",
               lambda: consistency_check(out)),
              ("docstrings (check_docstrings('.', ['recipes']))", lambda: docstring_check(out))]
    if args.recipes:
        rows = "; ".join(f"{field}={'|'.join([value] if isinstance(value, str) else value)}"
                         for field, value in zip(*filters))
        checks.append((f"recipe runs (run_recipe_tests, --device=cpu, rows: {rows or 'all'})",
                       lambda: recipe_runs(out, *filters, echo=lambda line: print("   ", line,
                                                                                  flush=True))))
    for name, check in checks:
        print(f"  {name} ...", flush=True)
        passed, output, seconds = check()
        print(f"  {name}: {'pass' if passed else 'FAIL'} ({seconds:.1f} s)", flush=True)
        if not passed:
            for line in _failure_lines(output):
                print("    | " + line)
        results.append((name.split(" (")[0], passed))

    failed = [name for name, passed in results if not passed]
    if args.keep:
        print(f"tree kept in {out}")
    elif created:
        shutil.rmtree(out, ignore_errors=True)
    else:  # an empty folder given: leave it empty
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    if failed:
        print(f"upstream layout: FAIL ({', '.join(failed)}) for {args.recipe} as "
              f"{summary['folders'][0][1]}/")
        return 1
    print(f"upstream layout: pass ({len(results)} checks) for {args.recipe} as "
          f"{summary['folders'][0][1]}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
