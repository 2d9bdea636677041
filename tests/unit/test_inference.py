"""The parts of ``s3brain.deployment.export`` that need no trained run: labels as ``EncoderASR``
decodes them, the blank padding of utterances of different lengths, the yaml of a head, the
audio reading, and the strategies the export refuses."""

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from s3brain.deployment import export, modules


def test_labels_drop_unknown_ids_and_join_phonemes():
    labels = modules.CTCLabels(separator=" ")
    labels.insert_blank(index=0)
    labels.update_from_iterable(["aa", "b", "ts"], sequence_input=False)
    assert labels.decode_ndim(torch.tensor([1, 3, 40, 2])) == ["aa ts b"]
    chars = modules.CTCLabels()
    chars.insert_blank(index=0)
    chars.update_from_iterable(list("AB "), sequence_input=False)
    assert "".join(chars.decode_ndim([1, 3, 2])) == "A B"


def test_blank_padding_decodes_each_utterance_as_alone():
    torch.manual_seed(0)
    alone = [torch.randn(n, 5).log_softmax(-1) for n in (7, 3, 12)]
    lens = torch.tensor([0.9, 0.25, 1.0])
    batch = modules.blank_padded(alone, lens, blank_index=0)
    together = sb.decoders.ctc_greedy_decode(batch, lens, blank_id=0)
    each = [sb.decoders.ctc_greedy_decode(lp[None], torch.ones(1), blank_id=0)[0]
            for lp in alone]
    assert together == each


def test_head_yaml_builds_the_same_head():
    head = sb.nnet.containers.Sequential(
        input_shape=[None, None, None],
        linear=sb.nnet.linear.Linear(n_neurons=6, input_size=4),
        activation=torch.nn.LeakyReLU(), drop=torch.nn.Dropout(0.1))
    text = f"head: {export._layer_yaml(head, 4)}"
    built = load_hyperpyyaml(text)["head"]
    built.load_state_dict(head.state_dict())
    x = torch.randn(2, 3, 4)
    assert torch.equal(built.eval()(x), head.eval()(x))
    with pytest.raises(export.ExportError, match="cannot describe"):
        export._layer_yaml(torch.nn.GRU(2, 2), 4)


def test_audio_normalizer_reads_as_the_recipes(tmp_path):
    from s3brain.backbone.audio import read_audio

    t = np.arange(4000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.cos(2 * np.pi * 200 * t)], 1)
    sf.write(tmp_path / "a.wav", stereo, 8000)
    data, rate = sf.read(tmp_path / "a.wav", dtype="float32", always_2d=True)
    got = modules.AudioNormalizer(16000)(torch.from_numpy(data), rate)
    assert torch.equal(got, read_audio(tmp_path / "a.wav", 16000))


def test_refused_strategies_say_why():
    from types import SimpleNamespace

    from s3brain.deployment.model import Deployment
    from s3brain.strategies.base import Strategy
    from s3brain.strategies.token_dropping import TokenDropping

    with pytest.raises(export.ExportError, match="random token dropping"):
        Deployment.inference_parts(SimpleNamespace(strategies=[
            TokenDropping("random", drop_share=0.5)]))

    class Unknown(Strategy):
        """A strategy that changes the forward and does not say how to ship it."""

        changes_forward = True

    with pytest.raises(export.ExportError, match="Unknown changes the backbone's forward"):
        Deployment.inference_parts(SimpleNamespace(strategies=[Unknown()]))


def test_not_a_run(tmp_path):
    with pytest.raises(export.ExportError, match="no hyperparams.yaml"):
        export.export_inference(tmp_path)
    assert export.main([str(tmp_path)]) == 2


def test_relative_output_folder_made_absolute(tmp_path):
    text = "output_folder: results/x/1\nsave_folder: results/x/1/save\nssl_hub: /abs/model\n"
    fixed = export._fix_relative_output(text, tmp_path)
    assert fixed.splitlines()[:2] == [f"output_folder: {tmp_path}", f"save_folder: {tmp_path}/save"]
    absolute = f"output_folder: {tmp_path}\nsave_folder: {tmp_path}/save\n"
    assert export._fix_relative_output(absolute, "/elsewhere") == absolute
