#!/usr/bin/env python3
"""LibriSpeech character CTC fine-tuning of a speech SSL backbone, one strategy per yaml.

    python recipes/LibriSpeech/train.py hparams/weight_ft.yaml
    cd recipes/LibriSpeech && python train.py hparams/weight_ft.yaml --data_folder=/data/LibriSpeech

The hparams path may be given relative to the current directory or to this folder. With the
default yaml values the run uses the embedded synthetic corpus (generated on first use) and the
project's own small backbone. Every run writes ``results.json`` in its output folder: WER/CER on
each test split (greedy and, with ``lm_decoding``, KenLM beam search), parameters, FLOPs, CPU
latency and real-time factor, storage per task, training time.

A yaml lists its strategies (``strategies:``, objects of ``s3brain.strategies``): ``Masks``
(S3-Router: learned masks over the frozen backbone), ``Pruning`` (a ``s3brain.pruning`` or
``s3brain.structured`` schedule: OMP, IMP, PARP, SAFARI) and ``InitFrom`` (start from the best
checkpoint of an earlier run, e.g. weight fine-tuning, for the pruning strategies).
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
from s3brain.data import synthetic  # noqa: E402
from s3brain.ctc import (CTCFineTuning, evaluate_and_report, fit,  # noqa: E402
                         frames_function, setup_strategy, start_experiment,
                         usable_utterances)
from s3brain.lm import CTCBeamLMDecoder, build_ngram  # noqa: E402

logger = logging.getLogger(__name__)


class ASR(CTCFineTuning):
    """Character CTC: word and character error rates, greedy and with the LM."""

    units = "chars"


def label_encoder_for(hparams):
    """The character CTC label encoder: blank, then the alphabet in order (fixed, not learned)."""
    encoder = sb.dataio.encoder.CTCTextEncoder()
    encoder.insert_blank(index=hparams["blank_index"])
    encoder.update_from_iterable(list(hparams["alphabet"]), sequence_input=False)
    encoder.expect_len(hparams["output_neurons"])
    if len(encoder) != hparams["output_neurons"]:
        raise ValueError(f"output_neurons={hparams['output_neurons']} but the alphabet gives "
                         f"{len(encoder)} labels (blank included)")
    return encoder


def dataio_prepare(hparams, manifests, label_encoder):
    """Datasets for train, valid and every test split, with bad utterances reported and skipped."""
    frames_of = frames_function(hparams)

    def load(csv_paths):
        """Manifest rows of ``csv_paths`` that CTC can learn from; the others are logged."""
        data = {}
        for path in csv_paths:
            data.update(sb.dataio.dataio.load_data_csv(path))
        kept, dropped = usable_utterances(data, lambda row: list(row["wrd"]),
                                          hparams["alphabet"], frames_of,
                                          hparams["avoid_if_longer_than"])
        for uid, reason in dropped:
            logger.warning("Skipping %s: %s", uid, reason)
        return kept

    def dataset(rows, sort="ascending"):
        """A ``DynamicItemDataset`` of ``rows``, sorted by duration unless ``sort`` is random."""
        data = sb.dataio.dataset.DynamicItemDataset(rows)
        if sort in ("ascending", "descending"):
            data = data.filtered_sorted(sort_key="duration", reverse=sort == "descending")
        return data

    # train_extra_csvs: more manifests to learn from, e.g. a teacher's pseudo labels of the
    # untranscribed pool (train_salad.py writes them), for semi-supervised fine-tuning
    train = dataset(load([manifests["train"], *(hparams.get("train_extra_csvs") or [])]),
                    hparams["sorting"])
    if hparams["sorting"] == "random":
        hparams["train_dataloader_opts"]["shuffle"] = True
    valid = dataset(load([manifests[s] for s in hparams["dev_splits"]]))
    tests = {s: dataset(load([manifests[s]])) for s in hparams["test_splits"]}
    datasets = [train, valid, *tests.values()]

    rate = backbone_rate(hparams["ssl"])

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        """The signal of one file, mono at the backbone's rate."""
        return read_audio(wav, rate)  # one channel at the backbone's rate, whatever the file's

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(wrd):
        """The transcript as character label ids."""
        return torch.LongTensor(label_encoder.encode_sequence(list(wrd)))

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens"])
    return train, valid, tests


def prepare_data(hparams):
    """Generate the synthetic corpus if it is the data folder, then write the manifests."""
    from librispeech_prepare import prepare_librispeech

    data_folder = Path(hparams["data_folder"])
    default = synthetic.corpus_dir(hparams["synthetic_seed"], hparams["synthetic_size"])
    if data_folder.resolve() == default.resolve():
        run_on_main(synthetic.generate, kwargs={
            "seed": hparams["synthetic_seed"], "size": hparams["synthetic_size"]})
    kwargs = {"data_folder": data_folder, "save_folder": hparams["output_folder"],
              "tr_splits": hparams["train_splits"], "dev_splits": hparams["dev_splits"],
              "te_splits": hparams["test_splits"], "skip_prep": hparams["skip_prep"]}
    run_on_main(prepare_librispeech, kwargs=kwargs)
    return prepare_librispeech(**{**kwargs, "skip_prep": True})


def lm_decoder_for(hparams, label_encoder):
    """The KenLM beam-search decoder, or None without ``lm_decoding``.

    Without ``kenlm_model`` an n-gram is estimated from the transcripts of ``lm_text_splits``
    (for the embedded default: every training split, whose sentences are disjoint from the test
    sentences).
    """
    if not hparams["lm_decoding"]:
        return None
    kenlm_model = hparams["kenlm_model"]
    if not kenlm_model:
        from librispeech_prepare import find_librispeech_root, transcripts

        kenlm_model = Path(hparams["save_folder"]) / f"lm_{hparams['lm_order']}gram.arpa"
        if not kenlm_model.exists():
            root = find_librispeech_root(hparams["data_folder"], hparams["train_splits"])
            splits = [s for s in hparams["lm_text_splits"] if (root / s).is_dir()]
            if len(splits) < len(hparams["lm_text_splits"]):
                logger.warning("LM text: splits %s not in %s, using %s",
                               sorted(set(hparams["lm_text_splits"]) - set(splits)), root, splits)
            if not splits:
                raise FileNotFoundError(
                    f"none of lm_text_splits={hparams['lm_text_splits']} is in {root}: give "
                    f"--kenlm_model=<an ARPA or KenLM binary>, other --lm_text_splits, or "
                    f"--lm_decoding=False")
            text = transcripts(root, splits)
            logger.info("Estimating a %d-gram LM from %d sentences of %s", hparams["lm_order"],
                        len(text), splits)
            run_on_main(build_ngram, args=[text, kenlm_model, hparams["lm_order"]])
    labels = ["" if i == hparams["blank_index"] else label_encoder.ind2lab[i]
              for i in range(len(label_encoder))]
    return CTCBeamLMDecoder(labels, str(kenlm_model), beam_width=hparams["lm_beam_width"],
                            lm_weight=hparams["lm_weight"],
                            word_insertion=hparams["lm_word_insertion"])


def main(argv):
    """Prepare, train, test and report one run; the exit status (2: a one-line error)."""
    try:
        hparams, run_opts = start_experiment(argv, RECIPE_DIR)
        label_encoder = label_encoder_for(hparams)
        manifests = prepare_data(hparams)
        setup_strategy(hparams)
        lm_decoder = lm_decoder_for(hparams, label_encoder)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        # no backbone, missing data, wrong init_from, bad keys: one line saying what to do
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    ssl = hparams["ssl"]
    train, valid, tests = dataio_prepare(hparams, manifests, label_encoder)
    asr = fit(ASR, hparams, run_opts, train, valid, label_encoder, lm_decoder)
    evaluate_and_report(asr, hparams, tests, {
        "strategy": hparams["strategy"], "ssl_hub": str(hparams["ssl_hub"]),
        "ssl_init": ssl.ssl_init, "train_split": "+".join(hparams["train_splits"])})
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
