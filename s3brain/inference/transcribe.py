"""Transcribe audio files from the command line with an inference folder
(``s3brain.deployment.export.export_inference``) or a mask bank
(``s3brain.inference.interfaces.S3RouterASR``)::

    python -m s3brain.inference.transcribe results/weight_ft/1986/inference a.wav b.flac ...
    python -m s3brain.inference.transcribe results/bank --task de clip1.mp3 clip2.mp3

Each file is read as the recipes read audio (``s3brain.backbone.audio.read_audio``: any container
soundfile reads, any rate and channel count, resampled to the backbone's rate); a line
``<file><TAB><transcript>`` goes to stdout (a SUPERB classifier's folder, or a bank's classifier
task, gives ``<file><TAB><target>=<label> ...``), a progress bar to stderr. A file that cannot be
read, is empty or too short for the model is reported by name on stderr and skipped; the exit
status is then 1 (0 when every file was transcribed, 2 when the folder cannot be loaded or
has no such ``--task``).

Example
-------
>>> import io, contextlib
>>> err = io.StringIO()
>>> with contextlib.redirect_stderr(err):
...     status = main(["/nowhere", "a.wav"])
>>> status, err.getvalue().split(":")[0]
(2, 'ERROR')
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from s3brain.backbone.audio import AudioReadError, read_audio


def load_interface(folder, savedir=None):
    """The SpeechBrain interface of an inference folder: ``S3RouterASR`` for a mask bank
    (a folder with ``custom.py``, loaded through ``foreign_class``), else ``EncoderASR``.

    Arguments
    ---------
    folder : str or Path
        The folder.
    savedir : str or Path, optional
        Where SpeechBrain links the folder's files (default: a temporary folder).

    Returns
    -------
    speechbrain.inference.interfaces.Pretrained
    """
    from speechbrain.inference.ASR import EncoderASR
    from speechbrain.inference.interfaces import foreign_class

    folder = Path(folder)
    if not (folder / "hyperparams.yaml").is_file():
        raise FileNotFoundError(f"{folder}: no hyperparams.yaml: give an inference folder "
                                f"(python -m s3brain.inference <run folder> writes one)")
    savedir = str(savedir or tempfile.mkdtemp(prefix="s3brain-asr-"))
    custom = folder / "custom.py"
    if custom.is_file():  # the class the folder's custom.py offers, the most general first
        offered = custom.read_text(encoding="utf-8")
        classname = next(name for name in ("S3RouterClassifier", "S3RouterASR",
                                           "UtteranceClassifier") if name in offered)
        return foreign_class(source=str(folder), pymodule_file="custom.py",
                             classname=classname, savedir=savedir)
    return EncoderASR.from_hparams(source=str(folder), savedir=savedir)


def _classifies(asr, task):
    """Whether ``asr`` labels utterances (a SUPERB classifier, or a bank's classifier task)
    rather than transcribing them."""
    if hasattr(asr, "classifies"):
        return asr.classifies(task if task is not None else asr.active_task)
    return hasattr(asr, "classify_batch")


def _output(asr, task, signal):
    """One file's line: its transcript, or a classifier's ``target=label`` pairs."""
    if _classifies(asr, task):
        options = {"tasks": [task]} if hasattr(asr, "classifies") and task is not None else {}
        labels = asr.classify_batch(signal[None], torch.ones(1), **options)[0][0]
        return " ".join(f"{target}={label}" for target, label in labels.items())
    words, _ = asr.transcribe_batch(signal[None], torch.ones(1))
    return words[0]


def transcribe_files(asr, files, task=None, progress=True, out=None):
    """Transcribe each file alone, skipping (and naming) those that fail.

    Arguments
    ---------
    asr : speechbrain.inference.interfaces.Pretrained
        ``EncoderASR`` or ``S3RouterASR``.
    files : list of str
        Audio files.
    task : str, optional
        The mask bank's task (default: its active one).
    progress : bool
        Show a progress bar on stderr.
    out : file, optional
        Where to write ``<file><TAB><transcript>`` as each file is done.

    Returns
    -------
    tuple
        ``(transcripts, failures)``: ``[(file, transcript)]`` and ``[(file, reason)]``.
    """
    rate = int(asr.hparams.sample_rate)
    if task is not None:
        asr.set_task(task)
    done, failed = [], []
    for path in tqdm(files, desc="transcribing", unit="file", disable=not progress,
                     file=sys.stderr):
        try:
            signal = read_audio(path, rate)
            line = _output(asr, task, signal)
        except AudioReadError as err:
            failed.append((path, str(err)))
            continue
        except RuntimeError as err:  # e.g. shorter than the model's first convolution
            failed.append((path, f"the model cannot transcribe it ({str(err).splitlines()[0]})"))
            continue
        done.append((path, line))
        if out is not None:
            tqdm.write(f"{path}\t{line}", file=out)
    return done, failed


def main(argv=None):
    """The command line; the exit status.

    Arguments
    ---------
    argv : list of str, optional
        The arguments after the program name.

    Returns
    -------
    int
        0: every file transcribed; 1: some failed (named on stderr); 2: no model, or no such
        task (one line, before any file).
    """
    parser = argparse.ArgumentParser(
        prog="python -m s3brain.inference.transcribe",
        description="Transcribe audio files with an s3brain inference folder or mask bank.")
    parser.add_argument("folder", help="an inference folder or a mask bank")
    parser.add_argument("files", nargs="+", help="audio files (any rate, channels, container)")
    parser.add_argument("--task", default=None, help="the mask bank's task")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:  # the folder and the task, before any file
        asr = load_interface(args.folder)
        if args.task is not None:
            if not hasattr(asr, "set_task"):
                raise ValueError(f"--task {args.task}: {args.folder} is not a mask bank")
            asr.set_task(args.task)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"ERROR: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    _, failed = transcribe_files(asr, args.files, args.task, not args.no_progress,
                                 out=sys.stdout)
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
