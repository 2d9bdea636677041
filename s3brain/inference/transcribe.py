"""Transcribe audio files from the command line with an inference folder
(``s3brain.deployment.export.export_inference``) or a mask bank
(``s3brain.inference.interfaces.S3RouterASR``)::

    python -m s3brain.inference.transcribe results/weight_ft/1986/inference a.wav b.flac ...
    python -m s3brain.inference.transcribe results/bank --task de clip1.mp3 clip2.mp3

Each file is read as the recipes read audio (``s3brain.backbone.audio.read_audio``: any container
soundfile reads, any rate and channel count, resampled to the backbone's rate); a line
``<file><TAB><transcript>`` goes to stdout, a progress bar to stderr. A file that cannot be
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
    if (folder / "custom.py").is_file():
        return foreign_class(source=str(folder), pymodule_file="custom.py",
                             classname="S3RouterASR", savedir=savedir)
    return EncoderASR.from_hparams(source=str(folder), savedir=savedir)


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
            words, _ = asr.transcribe_batch(signal[None], torch.ones(1))
        except AudioReadError as err:
            failed.append((path, str(err)))
            continue
        except RuntimeError as err:  # e.g. shorter than the model's first convolution
            failed.append((path, f"the model cannot transcribe it ({str(err).splitlines()[0]})"))
            continue
        done.append((path, words[0]))
        if out is not None:
            tqdm.write(f"{path}\t{words[0]}", file=out)
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
    _, failed = transcribe_files(asr, args.files, None, not args.no_progress, out=sys.stdout)
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
