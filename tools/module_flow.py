"""Which of the package's modules one recipe run enters, in the order it first enters them,
and how often control crosses from one folder of ``s3brain/`` to another: the map
CONTRIBUTING.md draws, measured on a real run.

    python tools/module_flow.py recipes/LibriSpeech/train.py \\
        recipes/LibriSpeech/hparams/s3router.yaml --debug --synthetic_size=tiny \\
        --number_of_epochs=1 --cost_repeats=1 --output_folder=/tmp/flow

The recipe's ``main`` runs as usual under ``sys.setprofile`` (slower), after its imports: a
module is entered when one of its functions runs, and every call of a function of ``s3brain``
from another module is counted. A call is *upward*
when it goes from a folder to one it may not import (``tests/unit/test_package_layout.py``'s
``MAY_IMPORT``): only a callback handed down (a Brain's hook called back by the library)
can do that, since the imports cannot.
"""

import argparse
import collections
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The folders, lowest first (each may import only those before it: CONTRIBUTING.md).
ORDER = ["utils", "data", "backbone", "lobes", "strategies", "deployment", "training",
         "inference", "compare"]


def folder_of(module):
    """``s3brain.<folder>.*`` -> folder; the recipe's own modules -> ``recipe``; else None."""
    parts = module.split(".")
    if parts[0] == "s3brain":
        return parts[1] if len(parts) > 2 else "s3brain"
    if module in ("recipe", "__main__") or module.endswith("_prepare"):
        return "recipe"
    return None


def rank(folder):
    """A folder's place in the order (the recipe above them all)."""
    return ORDER.index(folder) if folder in ORDER else len(ORDER)


def trace(script, argv):
    """Run ``script`` with ``argv`` and count the calls into the package.

    Returns
    -------
    tuple
        ``(modules in first-entry order, Counter of (caller folder, callee folder))``.
    """
    entered, crossings = [], collections.Counter()

    def profile(frame, event, arg):
        if event != "call" or frame.f_back is None or frame.f_code.co_name == "<module>":
            return  # a lazy import runs module code: only calls of functions count
        callee = frame.f_globals.get("__name__", "")
        if not callee.startswith("s3brain"):
            return
        caller = frame.f_back.f_globals.get("__name__", "")
        if callee not in entered:
            entered.append(callee)
        if caller != callee and folder_of(caller) is not None:
            source, target = folder_of(caller), folder_of(callee)
            if source != target:
                crossings[(source, target)] += 1

    sys.argv = [str(script), *argv]
    recipe = runpy.run_path(str(script), run_name="recipe")  # its imports, not traced
    sys.setprofile(profile)
    try:
        status = recipe["main"](argv)
    finally:
        sys.setprofile(None)
    if status:
        raise SystemExit(f"the run ended with status {status}")
    return entered, crossings


def report(entered, crossings):
    """The trace as Markdown: the modules by folder, the crossings, the upward ones."""
    by_folder = collections.defaultdict(list)
    for module in entered:
        by_folder[folder_of(module)].append(module)
    lines = [f"{len(entered)} modules of s3brain entered, in {len(by_folder)} folders:", ""]
    for folder in sorted(by_folder, key=rank):
        lines.append(f"- `{folder}`: " + ", ".join(f"`{m}`" for m in by_folder[folder]))
    upward = {k: v for k, v in crossings.items() if rank(k[0]) < rank(k[1])}
    lines += ["", "| from | to | calls |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {n} |" for (a, b), n in sorted(crossings.items(),
                                                            key=lambda kv: -kv[1])]
    lines += ["", f"{sum(crossings.values())} calls cross folders; "
                  f"{sum(upward.values())} go upward"
                  + (": " + ", ".join(f"{a} -> {b} ({n})" for (a, b), n in upward.items())
                     if upward else "")]
    return "\n".join(lines)


def main(argv=None):
    """Command line: the recipe script, then its own arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="a recipe's train.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the recipe's arguments")
    args = parser.parse_args(argv)
    entered, crossings = trace(Path(args.script).resolve(), args.args)
    print(report(entered, crossings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
