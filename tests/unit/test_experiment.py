"""A wrong input ends in one line before any work: a mistyped override is refused before the
yaml is loaded (``s3brain.training.experiment``), an unreachable hub after one connection
attempt and no retry (``s3brain.backbone.wrapper``), a local folder without any."""

import http.server
import io
import shutil
import socket
import threading
import typing
from contextlib import redirect_stderr
from pathlib import Path

import huggingface_hub.constants
import huggingface_hub.utils._http
import pytest
from conftest import REPO

from s3brain.backbone.wrapper import (
    BackboneUnavailableError,
    _hub_unreachable,
    default_backbone,
    hidden_size,
    load_ssl,
)
from s3brain.training import experiment
from s3brain.training.experiment import check_overrides, setup_errors, start_experiment

S3ROUTER = REPO / "recipes" / "LibriSpeech" / "hparams" / "s3router.yaml"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
                   "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


# --- overrides -----------------------------------------------------------------------------

def test_mistyped_override_names_the_key_and_the_closest_one():
    with pytest.raises(ValueError) as err:
        check_overrides(S3ROUTER, "sparsty: 0.1", ["--sparsty=0.1", "--debug"],
                        shown_as="hparams/s3router.yaml")
    assert str(err.value) == ("--sparsty=0.1: hparams/s3router.yaml has no key 'sparsty' "
                              "(did you mean 'sparsity'?)")


def test_every_unknown_key_in_one_line_as_typed():
    argv = ["--sparsty", "0.1", "--mask_scop=ffn", "--zzzzq=1"]
    with pytest.raises(ValueError) as err:
        check_overrides(S3ROUTER, "sparsty: 0.1\nmask_scop: ffn\nzzzzq: 1", argv, "s.yaml")
    assert str(err.value) == ("--sparsty 0.1, --mask_scop=ffn, --zzzzq=1: s.yaml has no keys "
                              "'sparsty' (did you mean 'sparsity'?), 'mask_scop' (did you mean "
                              "'mask_scope'?), 'zzzzq'")


def test_existing_keys_pass_nested_ones_included():
    # output_folder is a yaml key; the inside of a mapping is merged freely by hyperpyyaml
    check_overrides(S3ROUTER, "output_folder: /tmp/x\nsparsity: 0.2\n"
                              "train_dataloader_opts: {batch_size: 2, anything: 1}")
    check_overrides(S3ROUTER, {"sparsity": 0.2})
    check_overrides(S3ROUTER, "")


def test_malformed_override_is_one_line_naming_it():
    with pytest.raises(ValueError) as err:
        check_overrides(S3ROUTER, 'sparsity: 0.2\ntrain_splits: ["a"',
                        ["--sparsity=0.2", '--train_splits=["a"'])
    message = str(err.value)
    assert message.startswith('--train_splits=["a": not a valid yaml value (')
    assert "\n" not in message


def test_bad_override_refused_before_the_yaml_is_loaded(tmp_path, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("load_hyperpyyaml called")

    monkeypatch.setattr(experiment, "load_hyperpyyaml", must_not_load)
    out = tmp_path / "run"
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as stop, setup_errors():
        start_experiment(["hparams/s3router.yaml", "--sparsty=0.1", "--debug", "--device=cpu",
                          f"--output_folder={out}"], S3ROUTER.parents[1])
    assert stop.value.code == 2
    assert err.getvalue().splitlines() == [("ERROR: --sparsty=0.1: hparams/s3router.yaml has no "
                                            "key 'sparsty' (did you mean 'sparsity'?)")]
    assert not out.exists()


def test_run_options_are_not_checked_as_yaml_keys(tmp_path, monkeypatch):
    loaded = []

    class Loaded(Exception):
        pass

    def record(fin, overrides):
        loaded.append(overrides)
        raise Loaded

    monkeypatch.setattr(experiment, "load_hyperpyyaml", record)
    with pytest.raises(Loaded):
        start_experiment(["hparams/s3router.yaml", "--debug", "--device=cpu",
                          "--ckpt_interval_minutes=5", f"--output_folder={tmp_path}"],
                         S3ROUTER.parents[1])
    assert loaded == [f"output_folder: {tmp_path}"]


# --- the hub ---------------------------------------------------------------------------------

def _cache_model(cache, name="owner/tiny", weights=True):
    """Put the default backbone in huggingface_hub's cache layout under ``cache`` as ``name``."""
    repo = Path(cache) / f"models--{name.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in Path(default_backbone()).iterdir():
        if weights or file.suffix != ".safetensors":
            shutil.copy(file, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


@pytest.fixture
def network(monkeypatch, tmp_path):
    """No HF_HUB_OFFLINE, no proxy and an empty user cache (as on a new user's machine); every
    DNS look-up recorded and failing as without network; every call of huggingface_hub's
    retrying request recorded."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "user-cache"))
    record = {"lookups": [], "backoff": []}

    def no_network(host, *args, **kwargs):
        record["lookups"].append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    real_backoff = huggingface_hub.utils._http._http_backoff_base

    def backoff(*args, **kwargs):
        record["backoff"].append(args[:2])
        return real_backoff(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(huggingface_hub.utils._http, "_http_backoff_base", backoff)
    return record


def test_unreachable_hub_refused_after_one_attempt_without_retry(tmp_path, network):
    with pytest.raises(BackboneUnavailableError) as err:
        load_ssl("facebook/wav2vec2-base", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "ssl_hub='facebook/wav2vec2-base'" in message and "--ssl_hub=" in message
    assert "huggingface.co:443: Name or service not known" in message
    assert network["lookups"] == ["huggingface.co"]
    assert network["backoff"] == []  # huggingface_hub never asked, so never retried


@pytest.mark.parametrize("cache", ["run", "user"])
def test_unreachable_hub_takes_a_cached_model_without_any_request(tmp_path, network, cache):
    # the run's cache (load_ssl's save_path) or huggingface_hub's default one
    _cache_model(tmp_path / "run" if cache == "run" else huggingface_hub.constants.HF_HUB_CACHE)
    ssl = load_ssl("owner/tiny", tmp_path / "run")
    assert (ssl.ssl_init, hidden_size(ssl)) == ("pretrained", 192)
    assert network["lookups"] == ["huggingface.co"]
    assert network["backoff"] == []


def test_cached_model_without_weights_is_refused(tmp_path, network):
    _cache_model(tmp_path, weights=False)
    with pytest.raises(BackboneUnavailableError, match="nor in the cache"):
        load_ssl("owner/tiny", tmp_path)
    assert network["backoff"] == []


def test_hf_hub_offline_makes_no_attempt(tmp_path, network, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneUnavailableError, match="HF_HUB_OFFLINE is set"):
        load_ssl("facebook/wav2vec2-base", tmp_path)
    assert network == {"lookups": [], "backoff": []}


@pytest.mark.parametrize("source", ["local", "/no/such/model", "./no-such-model"])
def test_a_path_never_touches_the_network(tmp_path, network, source):
    if source == "local":
        assert load_ssl(default_backbone(), tmp_path).ssl_init == "pretrained"
    else:
        with pytest.raises(BackboneUnavailableError, match="neither a local directory nor a hub"):
            load_ssl(source, tmp_path)
    assert network == {"lookups": [], "backoff": []}


def test_the_probe_goes_through_the_proxy_the_environment_names(network, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert _hub_unreachable("https://huggingface.co", 1) == (
        "proxy.example:3128: Name or service not known")
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    assert _hub_unreachable("https://huggingface.co", 1).startswith("huggingface.co:443: ")
    assert network["lookups"] == ["proxy.example", "huggingface.co"]


class _NotFound(http.server.BaseHTTPRequestHandler):
    """A hub that answers every request with 404, recording it."""

    requests: typing.ClassVar[list] = []

    def do_HEAD(self):
        self.requests.append(("HEAD", self.path))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.do_HEAD()

    def log_message(self, *args):
        pass


def test_a_reachable_hub_is_asked_as_before(tmp_path, monkeypatch):
    """The probe opens: transformers asks the hub (here a local server, HF_ENDPOINT-style), and
    its answer is the one line."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "user-cache"))
    _NotFound.requests.clear()
    try:
        with pytest.raises(BackboneUnavailableError) as err:
            load_ssl("owner/missing", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert "the Hugging Face hub did not give it" in str(err.value)
    assert "\n" not in str(err.value)
    assert ("HEAD", "/owner/missing/resolve/main/config.json") in _NotFound.requests
