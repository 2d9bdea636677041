"""What a committed record may say about where and how it was made: paths without this machine's
folders, the command line likewise, and the facts of the machine a timing depends on.

A path inside the repository is written relative to it; a path outside it keeps only its last
two parts after ``...`` (enough to tell runs apart, nothing of the machine's layout); a relative
path is left as it is. The benchmarks' records (``benchmarks/records/``) and the runs' result
records (``s3brain.compare.records``) all go through these functions.

Example
-------
>>> portable_argv(["--run", "/repo/results/a", "--wer", "dense=/tmp/x/dense/results.json"],
...               repo="/repo")
['--run', 'results/a', '--wer', 'dense=.../dense/results.json']
>>> portable_values({"hub": "/repo/backbones/tiny", "seeds": [1, "/data/x/y"]}, repo="/repo")
{'hub': 'backbones/tiny', 'seeds': [1, '.../x/y']}
"""

import importlib
import os
import platform
from pathlib import Path

#: The repository these functions make paths relative to unless told another.
REPO = Path(__file__).resolve().parents[2]


def portable_path(path, repo=None):
    """``path`` as a record may show it: relative to ``repo`` when inside it, else its last two
    parts after ``...``; a relative path unchanged. Absolute paths are normalized first
    (``os.path.normpath``: ``a/../b`` is ``b``), without following links.

    Arguments
    ---------
    path : str or Path
        A path.
    repo : str or Path, optional
        The repository (default: this one, ``REPO``).

    Returns
    -------
    str

    Example
    -------
    >>> portable_path("/repo/benchmarks/records/x.json", "/repo")
    'benchmarks/records/x.json'
    >>> portable_path("/tmp/runs/a/inference", "/repo"), portable_path("/data", "/repo")
    ('.../a/inference', '.../data')
    >>> portable_path("results/a", "/repo")
    'results/a'
    """
    if not os.path.isabs(path):
        return os.fspath(path)
    path = Path(os.path.normpath(path))
    repo = Path(os.path.normpath(REPO if repo is None else repo))
    if path.is_relative_to(repo):
        return str(path.relative_to(repo))
    return "/".join(["...", *path.parts[1:][-2:]])


def portable_argv(argv, repo=None):
    """A command line with its absolute paths made ``portable_path``: every argument that is
    one, and the value of every ``NAME=VALUE`` argument whose value is one (``--wer
    dense=/abs/results.json``).

    Arguments
    ---------
    argv : list of str
        The arguments.
    repo : str or Path, optional
        The repository (default: this one).

    Returns
    -------
    list of str

    Example
    -------
    >>> portable_argv(["--wer", "dense=/tmp/x/dense/results.json", "--repeats", "5"], "/repo")
    ['--wer', 'dense=.../dense/results.json', '--repeats', '5']
    >>> portable_argv(["--record", "/repo/benchmarks/records/x.json", "a=b"], "/repo")
    ['--record', 'benchmarks/records/x.json', 'a=b']
    """
    out = []
    for arg in map(str, argv):
        name, sep, value = arg.partition("=")
        if os.path.isabs(arg):
            out.append(portable_path(arg, repo))
        elif sep and os.path.isabs(value):
            out.append(f"{name}={portable_path(value, repo)}")
        else:
            out.append(arg)
    return out


def portable_values(value, repo=None):
    """``value`` (a record's content, as read from JSON) with every string that is an absolute
    path made ``portable_path``, lists (and tuples, which become lists) and dicts followed
    inside; everything else unchanged.

    Arguments
    ---------
    value : object
        A string, number, list, tuple, dict, ...
    repo : str or Path, optional
        The repository (default: this one).

    Returns
    -------
    object
        A copy where anything changed; the same object where nothing could.

    Example
    -------
    >>> portable_values({"a": ["/repo/x", 3, {"b": "/home/me/runs/r1"}], "c": "x/y"}, "/repo")
    {'a': ['x', 3, {'b': '.../runs/r1'}], 'c': 'x/y'}
    """
    if isinstance(value, str):
        return portable_path(value, repo) if os.path.isabs(value) else value
    if isinstance(value, list | tuple):
        return [portable_values(v, repo) for v in value]
    if isinstance(value, dict):
        return {k: portable_values(v, repo) for k, v in value.items()}
    return value


def _version(module):
    """The ``__version__`` of an installed module, ``None`` when it is not installed."""
    try:
        return getattr(importlib.import_module(module), "__version__", None)
    except ImportError:
        return None


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The processor's model name as Linux's ``/proc/cpuinfo`` gives it (``platform.processor()``
    does not on Linux), ``None`` where the file or the line is not there.

    Arguments
    ---------
    cpuinfo : str or Path
        The file to read.

    Returns
    -------
    str or None

    Example
    -------
    >>> cpu_model("/no/such/file") is None
    True
    """
    cpuinfo = Path(cpuinfo)
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name") and ":" in line), None)


def machine_facts():
    """The facts of this machine a timing depends on: its CPUs (counted, usable by this process,
    processor, model name), the platform, and the versions of Python, torch, onnxruntime and
    transformers (``None`` for one not installed).

    Returns
    -------
    dict
        ``cpu_count``, ``cpus_usable``, ``processor``, ``cpu_model``, ``machine``,
        ``platform``, ``python``, ``torch``, ``onnxruntime``, ``transformers``.

    Example
    -------
    >>> facts = machine_facts()
    >>> facts["cpu_count"] == os.cpu_count(), facts["python"] == platform.python_version()
    (True, True)
    """
    return {"cpu_count": os.cpu_count(),
            "cpus_usable": (len(os.sched_getaffinity(0))
                            if hasattr(os, "sched_getaffinity") else None),
            "processor": platform.processor(), "cpu_model": cpu_model(),
            "machine": platform.machine(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": _version("torch"),
            "onnxruntime": _version("onnxruntime"), "transformers": _version("transformers")}
