#!/usr/bin/env python3
"""CommonVoice phoneme recognition (IPA, CTC) with a speech SSL backbone, one language per run.

    python recipes/CommonVoice/train.py hparams/s3router.yaml --language=de
    python recipes/CommonVoice/train.py hparams/weight_ft.yaml --language=nl \\
        --data_folder=/data/cv-corpus-17.0 --ssl_hub=facebook/wav2vec2-xls-r-300m

With the yaml defaults the run uses the Common Voice part of the embedded synthetic corpus
(generated on first use; en, de, nl, es, it, fr) and the project's small backbone. The phoneme
set is learned from the training manifest and kept in ``label_encoder.txt``. Each run writes
``results.json`` (PER on the test split, cost, storage per language) and, for S3-Router, the
language's ``task_mask.safetensors`` for the multilingual mask bank.
"""

import logging
import sys
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))

import speechbrain as sb  # noqa: E402
import torch  # noqa: E402
from speechbrain.utils.distributed import run_on_main  # noqa: E402

from s3brain.audio import backbone_rate, read_audio  # noqa: E402
from s3brain.backbone import BackboneUnavailableError  # noqa: E402
from s3brain.ctc import (CTCFineTuning, evaluate_and_report, fit,  # noqa: E402
                         frames_function, setup_strategy, start_experiment,
                         usable_utterances)
from s3brain.data import synthetic  # noqa: E402

logger = logging.getLogger(__name__)


class PhonemeRecognition(CTCFineTuning):
    """Phoneme CTC: error rates over phonemes (PER)."""

    units = "phonemes"


def prepare_data(hparams):
    """Generate the synthetic corpus if it is the data folder, then write the manifests."""
    from common_voice_prepare import prepare_common_voice

    data_folder = Path(hparams["data_folder"])
    default = synthetic.corpus_dir(hparams["synthetic_seed"], hparams["synthetic_size"])
    if data_folder.resolve() == (default / "CommonVoice").resolve():
        run_on_main(synthetic.generate, kwargs={
            "seed": hparams["synthetic_seed"], "size": hparams["synthetic_size"]})
    kwargs = {"data_folder": data_folder, "save_folder": hparams["output_folder"],
              "locale": hparams["language"],
              "splits": [hparams["train_split"], hparams["dev_split"], hparams["test_split"]],
              "skip_prep": hparams["skip_prep"]}
    run_on_main(prepare_common_voice, kwargs=kwargs)
    return prepare_common_voice(**{**kwargs, "skip_prep": True})


def label_encoder_for(hparams, train_csv):
    """The phoneme CTC label encoder: blank, then the training set's phonemes (saved, so a
    resumed or evaluated run uses the same mapping)."""
    encoder = sb.dataio.encoder.CTCTextEncoder()
    path = Path(hparams["save_folder"]) / "label_encoder.txt"
    if not encoder.load_if_possible(path):
        rows = sb.dataio.dataio.load_data_csv(train_csv)
        phonemes = sorted({p for row in rows.values() for p in row["phn"].split()})
        encoder.insert_blank(index=hparams["blank_index"])
        encoder.update_from_iterable(phonemes, sequence_input=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        run_on_main(encoder.save, args=[path])
    encoder.ignore_len()  # the head may be wider than the phoneme set
    if len(encoder) > hparams["output_neurons"]:
        raise ValueError(f"{len(encoder)} labels (blank and {len(encoder) - 1} phonemes) do not "
                         f"fit output_neurons={hparams['output_neurons']}: raise it")
    return encoder


def dataio_prepare(hparams, manifests, label_encoder):
    """Datasets for train, dev and test, with unusable clips reported and skipped."""
    allowed = [label for label in label_encoder.lab2ind if label != label_encoder.blank_label]

    def load(path):
        """Manifest rows of ``path`` that CTC can learn from; the others are logged."""
        data = sb.dataio.dataio.load_data_csv(path)
        kept, dropped = usable_utterances(
            data, lambda row: row["phn"].split(), allowed,
            frames_function(hparams),
            hparams["avoid_if_longer_than"])
        for uid, reason in dropped:
            logger.warning("Skipping %s: %s", uid, reason)
        data = sb.dataio.dataset.DynamicItemDataset(kept)
        return data.filtered_sorted(sort_key="duration")

    train, dev, test = (load(manifests[hparams[k]]) for k in ("train_split", "dev_split",
                                                               "test_split"))
    datasets = [train, dev, test]

    rate = backbone_rate(hparams["ssl"])

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        """The signal of one clip, mono at the backbone's rate (Common Voice: 48 kHz mp3)."""
        return read_audio(wav, rate)  # CommonVoice ships 48 kHz mp3: resampled here

    @sb.utils.data_pipeline.takes("phn")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(phn):
        """The phoneme transcript as label ids."""
        return torch.LongTensor(label_encoder.encode_sequence(phn.split()))

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "phn", "tokens"])
    return train, dev, test


def main(argv):
    """Prepare, train, test and report one language's run; the exit status."""
    try:
        hparams, run_opts = start_experiment(argv, RECIPE_DIR)
        manifests = prepare_data(hparams)
        label_encoder = label_encoder_for(hparams, manifests[hparams["train_split"]])
        setup_strategy(hparams, key="PER")
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    train, dev, test = dataio_prepare(hparams, manifests, label_encoder)
    brain = fit(PhonemeRecognition, hparams, run_opts, train, dev, label_encoder)
    evaluate_and_report(brain, hparams, {"test": test}, {
        "strategy": hparams["strategy"], "language": hparams["language"],
        "ssl_hub": str(hparams["ssl_hub"]), "ssl_init": hparams["ssl"].ssl_init,
        "train_split": f"{hparams['language']}/{hparams['train_split']}",
        "phonemes": len(label_encoder) - 1})
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
