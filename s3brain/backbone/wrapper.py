"""Loading speech SSL backbones (wav2vec2, HuBERT, WavLM, data2vec-audio) for the recipes.

``ssl_hub`` is a Hugging Face hub name (``facebook/wav2vec2-base``) or a local directory written
by ``save_pretrained``. Loading goes through SpeechBrain's Hugging Face integration, so the
module a recipe trains is ``speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2`` and its
``.model`` is the plain transformers model. A hub name the hub cannot give (no network,
``HF_HUB_OFFLINE``) is taken from the cache or refused in one line at once, without retries.

A local directory with a ``config.json`` but no weights gives a randomly initialised model of that
configuration (seeded), and says so: that is how the project's small default backbone behaves
until its pretrained weights are shipped.

Example
-------
>>> import tempfile, torch
>>> with tempfile.TemporaryDirectory() as tmp:
...     ssl = load_ssl(default_backbone(), tmp)
...     frames = feature_frames(ssl.model, 16000)
...     out = ssl(torch.zeros(1, 16000))
>>> ssl.ssl_init in ("pretrained", "random"), frames, out.shape[1] == frames, hidden_size(ssl)
(True, 49, True, 192)
"""

import logging
import os
import shutil
import socket
import urllib.parse
import urllib.request
from pathlib import Path

import torch
from speechbrain.dataio.dataio import length_to_mask
from speechbrain.utils.distributed import run_on_main

from s3brain.backbone.families import family, hf_model

logger = logging.getLogger(__name__)


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class BackboneUnavailableError(RuntimeError):
    """The SSL backbone cannot be loaded (no hub access, or a wrong directory).

    Example
    -------
    >>> str(BackboneUnavailableError("give a local folder: --ssl_hub=/path"))
    'give a local folder: --ssl_hub=/path'
    """


#: The shipped backbone the recipes start from unless given ``--ssl_hub``: ``w2v2-tiny-8k``
#: (8000 pretraining steps), which fine-tuned better than the earlier default ``w2v2-tiny``
#: (4000 steps, the same architecture; ``--ssl_hub=s3brain/backbones/w2v2-tiny``). Run folders
#: keep the backbone's weights in their checkpoints and name the folder they started from in
#: their ``results.json``.
DEFAULT_BACKBONE = "w2v2-tiny-8k"


def default_backbone():
    """Directory of the project's own small wav2vec2 backbone (shipped with the package).

    Returns
    -------
    str

    Example
    -------
    >>> Path(default_backbone()).name
    'w2v2-tiny-8k'
    """
    return str(Path(__file__).resolve().parents[1] / "backbones" / DEFAULT_BACKBONE)


def _has_weights(folder):
    """Whether a model folder holds weights: one file, or the index of a sharded checkpoint
    (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``)."""
    return any((Path(folder) / name).exists() or (Path(folder) / f"{name}.index.json").exists()
               for name in WEIGHT_FILES)


def _materialise_random(source, save_path, seed):
    """Write a seeded random initialisation of ``source``'s config as a HF model folder."""
    from transformers import AutoConfig, AutoModel

    target = Path(save_path) / f"random-init-seed{seed}"
    if _has_weights(target):
        return target
    config = AutoConfig.from_pretrained(source)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    # Several processes (DDP) may get here at once: write aside, then rename.
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    if (Path(source) / "preprocessor_config.json").exists():
        shutil.copy(Path(source) / "preprocessor_config.json", tmp / "preprocessor_config.json")
    try:
        os.rename(tmp, target)
    except OSError:  # another process was first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_ssl(source, save_path, random_init=False, random_init_seed=0, config_overrides=None,
             **wrapper_kwargs):
    """Load an SSL backbone through SpeechBrain's HF wrapper.

    Arguments
    ---------
    source : str
        Hub name or local directory.
    save_path : str
        Folder for downloads and, for a weightless directory, the random initialisation.
    random_init : bool
        Ignore the weights in ``source`` (a local directory) and initialise its architecture
        randomly: the from-scratch baseline.
    random_init_seed : int
        Seed of the random initialisation (``random_init``, or ``source`` without weights).
    config_overrides : dict, optional
        Attributes set on the model config after loading (``mask_time_prob``, ...).
    **wrapper_kwargs
        Passed to ``Wav2Vec2`` (``freeze``, ``freeze_feature_extractor``,
        ``output_all_hiddens``...).

    Returns
    -------
    speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        The wrapped backbone: ``.model`` is the transformers model, ``.ssl_init`` says
        ``"pretrained"`` or ``"random"``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ssl = load_ssl(default_backbone(), tmp, output_all_hiddens=True)
    >>> ssl.output_all_hiddens, ssl.model.config.layerdrop
    (True, 0.0)
    """
    from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

    source = str(source)
    init = "pretrained"
    if os.path.isdir(source):
        if not (Path(source) / "config.json").exists():
            raise BackboneUnavailableError(
                f"ssl_hub={source} is a directory without config.json: give a folder written by "
                "transformers' save_pretrained (config.json + model.safetensors).")
        if random_init or not _has_weights(source):
            why = "as asked (random_init)" if random_init else "as it holds no weights"
            logger.warning("The backbone of %s is RANDOMLY INITIALISED (seed %d) %s.",
                           source, random_init_seed, why)
            # under DDP the main process writes it, the others wait and then read it
            run_on_main(_materialise_random, args=[source, save_path, random_init_seed])
            source, init = str(_materialise_random(source, save_path, random_init_seed)), "random"
    else:
        if random_init:
            raise BackboneUnavailableError("random_init needs ssl_hub to be a local directory")
        source = _hub_source(source, cache_dir=save_path)
    Path(save_path).mkdir(parents=True, exist_ok=True)
    ssl = Wav2Vec2(source, save_path=str(save_path), **wrapper_kwargs)
    configure(ssl.model, config_overrides, every_layer=wrapper_kwargs.get("output_all_hiddens"))
    if wrapper_kwargs.get("freeze_feature_extractor"):
        # transformers' own flag too: otherwise its CNN marks its input as requiring grad, which
        # fails when the input is computed (a learned downsampling in front of the backbone).
        # HubertModel has no freeze_feature_encoder; every family's CNN has this method.
        ssl.model.feature_extractor._freeze_parameters()
    ssl.ssl_init = init
    return ssl


def configure(hf_model, overrides=None, every_layer=False):
    """Set ``overrides`` on the config of ``hf_model`` and make the config safe to run with.

    An override must name an attribute the family's config has (a ValueError says which do not,
    before any training). Attributes the family's modelling code reads but its config lacks
    (``LayerNames.config_defaults``: WavLM's SpecAugment reads ``mask_feature_min_masks``) get
    the other families' default. ``hidden_states`` always end with ``last_hidden_state`` (in
    the large layout transformers 5 otherwise returns the last block's output before the
    encoder's final layer norm). With ``every_layer`` (every block's output is used: SUPERB's
    weighted sum, early exit) LayerDrop is turned off, as a dropped block would be missing from
    the outputs.

    Arguments
    ---------
    hf_model : transformers.PreTrainedModel
        The model (its config is changed in place).
    overrides : dict, optional
        Config attributes to set.
    every_layer : bool
        Every block's output is used: LayerDrop off.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=8, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=16, conv_dim=(8,), conv_stride=(5,),
    ...     conv_kernel=(10,), num_feat_extract_layers=1, num_conv_pos_embedding_groups=2,
    ...     layerdrop=0.1))
    >>> configure(model, {"mask_time_prob": 0.0}, every_layer=True)
    >>> model.config.mask_time_prob, model.config.layerdrop
    (0.0, 0.0)
    """

    config = hf_model.config
    unknown = [key for key in (overrides or {}) if not hasattr(config, key)]
    if unknown:
        raise ValueError(f"config_overrides {unknown} are not attributes of {type(config).__name__}"
                         f" ({config.model_type}): remove them from the yaml's config_overrides")
    for key, value in (overrides or {}).items():
        setattr(config, key, value)
    for key, value in family(hf_model).config_defaults:
        if not hasattr(config, key):
            setattr(config, key, value)
    config.tie_last_hidden_states = True
    if every_layer:
        disable_layerdrop(hf_model, "every block's output is used")


def disable_layerdrop(model, why):
    """Turn off LayerDrop (a block skipped at random in training), saying ``why``.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model, or a SpeechBrain wrapper of one (its config is changed).
    why : str
        The reason, logged.
    """

    config = hf_model(model).config
    if getattr(config, "layerdrop", 0.0) > 0:
        logger.warning("LayerDrop %.2f of the backbone turned off: %s", config.layerdrop, why)
        config.layerdrop = 0.0


def hidden_layer_count(ssl):
    """Number of hidden states ``ssl`` (a SpeechBrain wrapper with ``output_all_hiddens``)
    returns: asked of the backbone itself, on a short silent input in eval mode.

    Arguments
    ---------
    ssl : torch.nn.Module
        The wrapper.

    Returns
    -------
    int
        Blocks + 1.
    """
    model = ssl.model
    param = next(model.parameters())
    samples = int(max(model.config.conv_kernel)) * int(torch.prod(torch.tensor(
        model.config.conv_stride)))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, samples, device=param.device, dtype=param.dtype),
                        output_hidden_states=True)
    finally:
        model.train(training)
    return len(out.hidden_states)


def _hub_unreachable(endpoint, timeout):
    """Why the hub at ``endpoint`` cannot be reached, or None: one TCP connection to its host
    (or to the proxy the environment names for it, as huggingface_hub's client would use),
    opened and closed, nothing sent.

    Arguments
    ---------
    endpoint : str
        The hub's URL (``huggingface_hub.constants.ENDPOINT``: ``HF_ENDPOINT`` or
        ``https://huggingface.co``).
    timeout : float
        Seconds to wait for the connection.

    Returns
    -------
    str or None
        ``"host:port: reason"`` when the connection fails.
    """
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    proxies = urllib.request.getproxies()  # HTTPS_PROXY, ALL_PROXY, ... (NO_PROXY below)
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host = proxy.hostname
        port = proxy.port or {"https": 443, "socks5": 1080, "socks5h": 1080}.get(proxy.scheme, 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:  # no DNS, no route, refused, timed out
        return f"{host}:{port}: {err.strerror or err}"
    return None


def _hub_source(name, cache_dir=None):
    """What to load for the hub name ``name``: ``name`` itself when the hub answers, its folder
    in the cache when the hub cannot be reached; else one clear line, at once.

    Without network, huggingface_hub retries each file it has not cached five times (about
    40 s) before transformers gives up, and a cached model asks for optional files it lacks
    (``processor_config.json``) the same way. So the hub is tried first with one TCP
    connection (``_hub_unreachable``, with huggingface_hub's own metadata timeout). When it
    opens, loading goes on exactly as without the check. When it fails, or ``HF_HUB_OFFLINE``
    is set, the model is taken from the cache as a local folder (no request at all) or
    refused. A name that cannot be a hub name (``/path/to/model``: a folder that does not
    exist) is refused without touching the network.

    Arguments
    ---------
    name : str
        The hub name (``facebook/wav2vec2-base``).
    cache_dir : str, optional
        The cache the backbone is loaded into (``load_ssl``'s ``save_path``), looked in before
        huggingface_hub's default one.

    Returns
    -------
    str
        ``name``, or the folder of its cached snapshot.

    Raises
    ------
    BackboneUnavailableError
        The one line to show.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import (
        HFValidationError,
        LocalEntryNotFoundError,
        validate_repo_id,
    )
    from transformers import AutoConfig

    fix = ("Download it elsewhere (transformers' save_pretrained) and pass the folder: "
           "--ssl_hub=/path/to/model")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise BackboneUnavailableError(
            f"Cannot load ssl_hub={name!r}: it is neither a local directory nor a hub name "
            "(owner/model). Give a folder written by transformers' save_pretrained "
            "(config.json + model.safetensors), or a hub name") from None
    if constants.HF_HUB_OFFLINE:
        offline = "HF_HUB_OFFLINE is set"
    else:
        unreachable = _hub_unreachable(constants.ENDPOINT, constants.HF_HUB_ETAG_TIMEOUT)
        if unreachable is None:
            try:
                AutoConfig.from_pretrained(name)  # as before the check
            except Exception as err:  # noqa: BLE001 (OSError from transformers, hub errors)
                first_line = (str(err).strip().splitlines() or [""])[0]
                raise BackboneUnavailableError(
                    f"Cannot load ssl_hub={name!r}: it is not a local directory and the Hugging "
                    f"Face hub did not give it ({type(err).__name__}: {first_line}). {fix}"
                ) from None
            return name
        offline = f"the Hugging Face hub cannot be reached ({unreachable})"
    for cache in dict.fromkeys([cache_dir, None]):  # the run's cache, then the user's
        try:
            folder = Path(snapshot_download(name, cache_dir=cache, local_files_only=True))
        except LocalEntryNotFoundError:  # not cached there
            continue
        if (folder / "config.json").exists() and (
                _has_weights(folder)):
            logger.warning("ssl_hub=%s is loaded from the cache (%s): %s", name, folder, offline)
            return str(folder)
    raise BackboneUnavailableError(f"Cannot load ssl_hub={name!r}: it is not a local directory, "
                                   f"nor in the cache, and {offline}. {fix}")


def hidden_size(ssl):
    """Width of the backbone's output features.

    Arguments
    ---------
    ssl : torch.nn.Module
        The wrapper.

    Returns
    -------
    int
        (See the module's example.)
    """
    return ssl.model.config.hidden_size


def feature_frames(hf_model, num_samples):
    """Number of frames the CNN feature extractor gives for ``num_samples`` audio samples.

    Arguments
    ---------
    hf_model : transformers.PreTrainedModel
        The model.
    num_samples : int
        Audio samples.

    Returns
    -------
    int
        (See the module's example.)
    """
    lengths = hf_model._get_feat_extract_output_lengths(torch.as_tensor(num_samples))
    return int(lengths)


def wav_samples(wavs, wav_lens=None):
    """Valid samples of each utterance, from SpeechBrain's relative lengths, rounded as the
    wrapper's padding mask rounds them (every sample when ``wav_lens`` is None).

    Arguments
    ---------
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor, optional
        Relative lengths (the longest 1.0).

    Returns
    -------
    torch.Tensor
        ``[batch]`` integers, on ``wavs``' device.

    Example
    -------
    >>> wav_samples(torch.zeros(2, 100), torch.tensor([1.0, 0.555])).tolist()
    [100, 56]
    """
    if wav_lens is None:
        return torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long, device=wavs.device)
    return (wav_lens * wavs.shape[1]).round().long().to(wavs.device)


def normalized_input(ssl, wavs, traceable=False):
    """The waveform the wrapper hands its model: normalised over time (zero mean, unit
    variance, per utterance, padding included) when its preprocessor config says
    ``do_normalize`` (``ssl.normalize_wav``), else as is.

    Arguments
    ---------
    ssl : torch.nn.Module
        The wrapper (or anything with ``normalize_wav``).
    wavs : torch.Tensor
        ``[batch, samples]``.
    traceable : bool
        Written with mean and variance, so that an ONNX export traces it for any length (the
        same values to rounding, not bit for bit).

    Returns
    -------
    torch.Tensor
        ``[batch, samples]``.

    Example
    -------
    >>> class Wrapper:
    ...     normalize_wav = True
    >>> out = normalized_input(Wrapper(), torch.tensor([[1.0, 2.0, 3.0]]))
    >>> [round(x, 3) for x in out[0].tolist()]
    [-1.225, 0.0, 1.225]
    """
    if not getattr(ssl, "normalize_wav", False):
        return wavs
    if traceable:
        return (wavs - wavs.mean(1, keepdim=True)) / torch.sqrt(
            wavs.var(1, unbiased=False, keepdim=True) + 1e-5)
    return torch.nn.functional.layer_norm(wavs, wavs.shape[1:])


def output_normalized(ssl, features):
    """The wrapper's ``output_norm``: a layer norm over time and channels together (the last two
    dimensions) of each utterance's features (of each layer's, for every layer's output), when
    ``ssl.output_norm``; else the features as they are.

    Arguments
    ---------
    ssl : torch.nn.Module
        The wrapper (or anything with ``output_norm``).
    features : torch.Tensor
        ``[batch, frames, hidden]`` or ``[layers, batch, frames, hidden]``.

    Returns
    -------
    torch.Tensor
        The same shape.

    Example
    -------
    >>> class Wrapper:
    ...     output_norm = True
    >>> out = output_normalized(Wrapper(), torch.randn(2, 5, 4))
    >>> round(float(out[0].mean()), 4) == 0.0 and round(float(out[0].std(unbiased=False)), 3)
    1.0
    """
    if not getattr(ssl, "output_norm", False):
        return features
    return torch.nn.functional.layer_norm(features, features.shape[-2:])


def wrapper_forward(ssl, wavs, wav_lens=None, model=None, every_layer=None, traceable=False):
    """What the wrapper's forward gives (``ssl(wavs, wav_lens)``, without its ``freeze``
    no-grad), step by step: the padding mask from the relative lengths, ``normalized_input``,
    the transformers model, every layer's output stacked or the last, ``output_normalized``.

    Arguments
    ---------
    ssl : torch.nn.Module
        The wrapper (``normalize_wav``, ``output_norm``, ``output_all_hiddens``, ``model``).
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor, optional
        Relative lengths; None: nothing is padded (no attention mask).
    model : torch.nn.Module, optional
        The transformers model to run in place of ``ssl.model`` (a deployable copy).
    every_layer : bool, optional
        Every layer's output ``[layers + 1, batch, frames, hidden]`` instead of the last;
        default: the wrapper's ``output_all_hiddens``.
    traceable : bool
        The ONNX-traceable input normalisation (``normalized_input``).

    Returns
    -------
    torch.Tensor
        ``[batch, frames, hidden]``, or ``[layers + 1, batch, frames, hidden]``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ssl = load_ssl(default_backbone(), tmp, output_norm=True).eval()
    ...     wavs, wav_lens = torch.randn(2, 8000), torch.tensor([1.0, 0.5])
    ...     with torch.no_grad():
    ...         same = torch.equal(wrapper_forward(ssl, wavs, wav_lens), ssl(wavs, wav_lens))
    >>> same
    True
    """
    model = ssl.model if model is None else model
    if every_layer is None:
        every_layer = getattr(ssl, "output_all_hiddens", False)
    mask = None
    if wav_lens is not None:
        mask = length_to_mask(wav_samples(wavs, wav_lens), wavs.shape[1], dtype=torch.bool)
    out = model(normalized_input(ssl, wavs, traceable), attention_mask=mask,
                output_hidden_states=every_layer)
    out = torch.stack(list(out.hidden_states), dim=0) if every_layer else out.last_hidden_state
    return output_normalized(ssl, out)
