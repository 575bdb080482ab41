"""NDIF: models too large for this machine, run remotely through nnsight, with the user's key.

Only the model's config and tokenizer are read here (a meta model: no weights); the trace
body runs on NDIF's GPUs and sends back kilobytes (per-layer top-k and statistics), not
logits. Every nnsight name used for remote work stays in this module. Offline, or without
a key, `ndif_status` says so and `reproduction_code` gives the notebook code to run
elsewhere.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch

from perplex.core.errors import PerplexError
from perplex.core.settings import load_settings

NDIF_MODELS_URL = "https://nnsight.net/status/"

class NdifError(PerplexError):
    """A remote (NDIF) lens run cannot be started or failed."""

def ndif_api_key() -> str | None:
    """The operator's NDIF API key (nnsight's config or NDIF_API_KEY), where it may be used.

    On a hosted server the operator's key serves visitors only with PERPLEX_OPERATOR_KEYS
    set; otherwise each visitor brings their own, kept in their browser session.
    """
    from nnsight import CONFIG

    settings = load_settings()
    if settings.hosted and not settings.operator_keys:
        return None
    return getattr(CONFIG.API, "APIKEY", None) or os.environ.get("NDIF_API_KEY") or None

def hub_error(model_id: str, exc: BaseException) -> NdifError:
    """What to tell the researcher when `model_id`'s config or tokenizer cannot be read."""
    text = f"{type(exc).__name__}: {exc}"
    if "trust_remote_code" in text:
        return NdifError(f"{model_id} needs its own code to load (trust_remote_code), and "
                         "Perplex does not run a repository's code implicitly. Choose a "
                         "model that transformers supports natively.")
    if "gated" in text.lower() or "401" in text or "403" in text:
        return NdifError(f"{model_id} is gated on the Hugging Face Hub: accept its licence "
                         "on its Hub page and set HF_TOKEN, so its config and tokenizer can "
                         f"be read. ({text})")
    return NdifError(f"Could not read the config and tokenizer of {model_id!r} from the "
                     "Hugging Face Hub (needed to build the model's structure here; no "
                     "weights are downloaded). Check the id and this machine's network. "
                     f"({text})")

def remote_error(model_id: str, exc: BaseException) -> NdifError:
    """What to tell the researcher when the remote run itself fails."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if isinstance(exc, (ConnectionError, TimeoutError)) or _is_transport_error(exc) \
            or "failed to send request" in lowered and ("connect" in lowered
                                                        or "timed out" in lowered):
        return NdifError(f"NDIF cannot be reached from this machine ({text}). It may be "
                         "offline, or this machine has no network: run the code below in "
                         "a notebook elsewhere.")
    if any(word in lowered for word in ("api key", "apikey", "api-key", "unauthorized",
                                        "forbidden", "401", "403")):
        return NdifError(f"NDIF refused the API key ({text}). Check NDIF_API_KEY (keys are "
                         "at https://login.ndif.us); some models also need access granted "
                         "on NDIF.")
    if any(word in lowered for word in ("not deployed", "not running", "not hosted",
                                        "not found", "no deployment", "not available",
                                        "model_key", "model key")):
        return NdifError(f"NDIF does not host {model_id} right now ({text}). See the models "
                         f"it runs at {NDIF_MODELS_URL} (or nnsight.status()) and pick one.")
    return NdifError(f"The run on NDIF failed ({text}).")

def _is_transport_error(exc: BaseException) -> bool:
    """Whether `exc` comes from the network layer (websocket, httpx) rather than NDIF."""
    module = type(exc).__module__ or ""
    return module.startswith(("websocket", "httpx", "httpcore", "socket", "ssl")) \
        and "Status" not in type(exc).__name__  # an HTTP status is NDIF answering

def reproduction_code(model_id: str, prompt: str, layers_path: str, norm_path: str,
                      head_path: str, remote: bool, gguf_file: str | None = None) -> str:
    """Python (nnsight) that recomputes the logit lens of `prompt`, to paste in a notebook.

    Paths are attribute paths from the causal LM (e.g. "model.layers", "model.norm",
    "lm_head"). The projection runs inside the trace, so it also works remotely on NDIF.
    With `gguf_file` (weights dequantised from a GGUF file, as the bundled model's are) the
    notebook loads that file the way Perplex does, so it computes with the same weights; on
    NDIF only the Hub's weights exist, and the code says its numbers will differ.
    """
    return f'''from nnsight import LanguageModel

{_loading(model_id, remote, gguf_file)}
prompt = {prompt!r}
tops = []
with model.trace(prompt, remote={remote!r}):
    blocks = model.{layers_path}
    residuals = [blocks[0].input]  # the embedding, as the first block reads it
    for block in blocks:
        out = block.output
        residuals.append(out[0] if isinstance(out, tuple) else out)
    for h in residuals:  # final norm + unembedding at every layer: the logit lens
        probs = model.{head_path}(model.{norm_path}(h)).float().softmax(dim=-1)
        tops.append(probs[0].topk(3, dim=-1).save())  # per position: top-3 ids and probs

for layer, top in enumerate(tops):
    words = [model.tokenizer.decode(int(i)) for i in top.indices[-1]]
    print(layer, list(zip(words, top.values[-1].tolist())))
'''

def _loading(model_id: str, remote: bool, gguf_file: str | None) -> str:
    if gguf_file is None:
        return f"model = LanguageModel({model_id!r}, device_map=\"auto\")"
    if remote:
        return (f"# NDIF runs the Hub's full-precision {model_id}; Perplex computed with the "
                f"weights\n# dequantised from {Path(gguf_file).name}, so these numbers will "
                f"differ from its.\nmodel = LanguageModel({model_id!r}, device_map=\"auto\")")
    folder, name = str(Path(gguf_file).parent), Path(gguf_file).name
    return ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"# the weights Perplex uses: dequantised from {name} by transformers\n"
            f"folder, gguf = {folder!r}, {name!r}\n"
            "weights = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)\n"
            "tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)\n"
            "model = LanguageModel(weights, tokenizer=tokenizer)")


def ndif_key_set() -> bool:
    """Whether the operator's NDIF API key is configured and may be used (`ndif_api_key`)."""
    return ndif_api_key() is not None

@dataclass(frozen=True)
class NdifStatus:
    """Whether this machine can run on NDIF, and what to tell the researcher."""

    key_set: bool
    reachable: bool | None  # None: not checked (no key)
    message: str

def ndif_status(timeout: float = 2.0, connect=socket.create_connection,
                api_key: str | None = None) -> NdifStatus:
    """Check for an NDIF key and, with one, whether NDIF's host accepts a connection.

    `api_key` is a key given here (the sidebar's), else nnsight's config or NDIF_API_KEY.
    `connect(address, timeout)` opens the probe connection (tests pass a fake).
    """
    from nnsight import CONFIG

    if not (api_key or ndif_key_set()):
        return NdifStatus(False, None, (
            "No NDIF API key is set, so larger models cannot run remotely from here. Set one "
            "in the sidebar (Engine → NDIF), with nnsight.CONFIG.set_default_api_key(...) or "
            "the NDIF_API_KEY environment variable; the code below reproduces this view "
            "locally, or on NDIF with a key."))
    host = str(CONFIG.API.HOST)
    url = urlsplit(host if "://" in host else f"https://{host}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with connect((url.hostname, port), timeout):
            pass
    except OSError as exc:
        return NdifStatus(True, False, (
            f"An NDIF API key is set, but NDIF ({url.hostname}:{port}) cannot be reached from "
            f"this machine ({type(exc).__name__}: {exc}); it may be offline. Run the code "
            "below in a notebook on a machine with network access."))
    return NdifStatus(True, True, (
        f"An NDIF API key is set and NDIF ({url.hostname}) answers: run this prompt on a "
        "model NDIF hosts below, or the code below (remote=True) in a notebook."))

def hosted_models() -> list[str]:
    """The Hub ids of the models NDIF runs now (nnsight's status call); [] if it cannot say."""
    import nnsight

    try:
        deployments = nnsight.status().deployments
    except Exception:  # nnsight reports an unreachable service as empty; anything else too
        return []
    return sorted(repo for repo, entry in deployments.items()
                  if isinstance(entry, dict) and entry.get("state") == "RUNNING")


def hub_model(model_id: str):
    """The nnsight wrapper of Hub model `model_id`, built on the meta device (no weights).

    Reads only the config and tokenizer from the Hub; never runs the repository's own code.
    `TransformersModel(task="text-generation")` is 0.8's name for `LanguageModel` (same
    remote key). The tokenizer is loaded here and handed over: nnsight 0.8.1 with
    transformers 5 otherwise fails to guess it for a meta-built text-generation pipeline.
    """
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False)
    return TransformersModel(model_id, task="text-generation", tokenizer=tokenizer,
                             trust_remote_code=False)

def loaded_model(model: torch.nn.Module, tokenizer):
    """The nnsight wrapper of a causal LM already in memory (local runs and tests)."""
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(model, task="text-generation", tokenizer=tokenizer)

def remote_backend(wrapper, api_key: str):
    """The NDIF backend for `wrapper`, sending `api_key`.

    nnsight otherwise reads the key only from its config, which sees NDIF_API_KEY only if it
    was set before nnsight was imported. Resolving the model's remote key asks the Hub for
    the canonical repository id.
    """
    from nnsight.intervention.backends.remote import RemoteBackend

    env = wrapper._remoteable_get_env() if hasattr(wrapper, "_remoteable_get_env") else {}
    return RemoteBackend(wrapper.to_model_key(), api_key=api_key, env=env)
