"""The shipped backbone: loads offline with transformers and through SpeechBrain, same outputs."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel

from s3brain.backbone.wrapper import BackboneUnavailableError, default_backbone, load_ssl

SHIPPED = Path(default_backbone())


@pytest.mark.parametrize("name", ["w2v2-tiny", "w2v2-tiny-8k"])
def test_shipped_backbone_is_a_small_pretrained_hf_model(name):
    folder = SHIPPED.parent / name
    assert (folder / "model.safetensors").exists(), "the pretrained weights are not shipped"
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size <= 20 * 2**20
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    assert model.config.model_type == "wav2vec2"
    assert 1e6 <= sum(p.numel() for p in model.parameters()) <= 5e6
    stored = load_file(folder / "model.safetensors")
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, stored[key]), key
    # same module names as wav2vec2-base, so every strategy finds its layers
    layer = model.encoder.layers[0]
    assert hasattr(layer.feed_forward, "intermediate_dense") and hasattr(layer.attention, "q_proj")
    card = (folder / "README.md").read_text()
    assert "test-clean" in card and "test-other" in card
    assert json.loads((folder / "training.json").read_text())["steps"] > 0


def test_default_is_the_longest_pretrained_of_one_architecture():
    """The default is the shipped backbone pretrained longest; the earlier default, with which
    the READMEs' older tables were made, has its architecture and other weights."""
    folders = [f for f in SHIPPED.parent.iterdir() if (f / "config.json").exists()]
    steps = {f: json.loads((f / "training.json").read_text())["steps"] for f in folders}
    assert max(steps, key=steps.get) == SHIPPED and steps[SHIPPED] == 8000
    earlier = SHIPPED.parent / "w2v2-tiny"
    assert steps[earlier] == 4000
    configs = [json.loads((f / "config.json").read_text()) for f in (SHIPPED, earlier)]
    for config in configs:
        config.pop("transformers_version")
    assert configs[0] == configs[1]
    key = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    weights = [load_file(f / "model.safetensors")[key] for f in (SHIPPED, earlier)]
    assert not torch.equal(*weights)  # not a copy of the earlier default


def test_speechbrain_wrapper_gives_the_transformers_output(tmp_path):
    ssl = load_ssl(SHIPPED, tmp_path)
    assert ssl.ssl_init == "pretrained"
    ssl.eval()
    reference = AutoModel.from_pretrained(SHIPPED, local_files_only=True).eval()
    wav = torch.randn(2, 24000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = ssl(wav)
        # the wrapper normalises the waveform (preprocessor_config: do_normalize)
        theirs = reference(F.layer_norm(wav, wav.shape[1:])).last_hidden_state
    torch.testing.assert_close(ours, theirs)


def test_random_init_ignores_the_weights(tmp_path):
    pretrained = load_ssl(SHIPPED, tmp_path / "a")
    scratch = load_ssl(SHIPPED, tmp_path / "b", random_init=True, random_init_seed=3)
    again = load_ssl(SHIPPED, tmp_path / "c", random_init=True, random_init_seed=3)
    assert scratch.ssl_init == "random"
    name = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    weights = [dict(m.model.named_parameters())[name] for m in (pretrained, scratch, again)]
    assert not torch.equal(weights[0], weights[1])
    assert torch.equal(weights[1], weights[2])


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneUnavailableError, match="config.json"):
        load_ssl(tmp_path, tmp_path / "save")


def test_wrapper_forward_steps_on_the_shipped_backbone(tmp_path):
    from s3brain.backbone.wrapper import (
        normalized_input,
        output_normalized,
        wav_samples,
        wrapper_forward,
    )

    ssl = load_ssl(default_backbone(), tmp_path, output_norm=True).eval()
    wavs = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    wav_lens = torch.tensor([1.0, 0.45])
    assert wav_samples(wavs, wav_lens).tolist() == [8000, 3600]
    assert wav_samples(wavs).tolist() == [8000, 8000]
    deployed = AutoModel.from_pretrained(SHIPPED, local_files_only=True).eval()
    with torch.no_grad():
        reference = ssl(wavs, wav_lens)
        assert torch.equal(wrapper_forward(ssl, wavs, wav_lens), reference)
        # another copy of the transformers model (what a deployed copy runs)
        assert torch.allclose(wrapper_forward(ssl, wavs, wav_lens, model=deployed), reference,
                              atol=1e-6)
        every = wrapper_forward(ssl, wavs, wav_lens, every_layer=True)
    assert every.shape[0] == ssl.model.config.num_hidden_layers + 1
    assert torch.equal(every[-1], reference)  # the last hidden state, through the output norm
    ssl.normalize_wav = True
    assert torch.allclose(normalized_input(ssl, wavs, traceable=True),
                          F.layer_norm(wavs, wavs.shape[1:]), atol=1e-5)
    ssl.output_norm = False
    assert output_normalized(ssl, reference) is reference


def test_a_sharded_checkpoint_is_loaded_not_randomly_initialised(tmp_path):
    """A folder whose weights are sharded (an index and several files, as save_pretrained
    writes a large model) holds weights: it loads, with the same outputs as one file."""
    from s3brain.backbone.tiny_models import tiny_model, write_tiny_model
    from s3brain.backbone.wrapper import load_ssl

    single = write_tiny_model(tmp_path / "single", "wav2vec2", "base")
    sharded = tmp_path / "sharded"
    tiny_model("wav2vec2", "base").save_pretrained(sharded, max_shard_size="100KB")
    shutil.copy(single / "preprocessor_config.json", sharded)
    assert (sharded / "model.safetensors.index.json").exists()
    one = load_ssl(str(single), str(tmp_path / "a"))
    many = load_ssl(str(sharded), str(tmp_path / "b"))
    assert one.ssl_init == many.ssl_init == "pretrained"
    wav = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(one.eval()(wav), many.eval()(wav), rtol=0, atol=0)
