"""The logit lens of a larger model, run remotely on NDIF through nnsight.

The projection through the final norm and unembedding runs inside the trace, on NDIF's
GPUs; only the top-k candidates and per-position statistics come back. The result is the
same `LogitLens` the local lens gives, so the page draws both with one view. Locally only
the model's config and tokenizer are read from the Hub (a meta model: no weights).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from perplex.errors import PerplexError
from perplex.lens import DEFAULT_TOP_K, LogitLens, find_anatomy
from perplex.nnsight_adapter import hub_model, remote_backend, trace_lens_tops
from perplex.tokens import token_texts

NDIF_MODELS_URL = "https://nnsight.net/status/"


class NdifError(PerplexError):
    """A remote (NDIF) lens run cannot be started or failed."""


def ndif_api_key() -> str | None:
    """The NDIF API key from nnsight's config or the NDIF_API_KEY environment variable."""
    from nnsight import CONFIG

    return getattr(CONFIG.API, "APIKEY", None) or os.environ.get("NDIF_API_KEY") or None


def lens_through_nnsight(wrapper, ids: Sequence[int], *, top_k: int = DEFAULT_TOP_K,
                         label: str = "", remote: bool | str = False,
                         backend=None) -> LogitLens:
    """The logit lens of token ids `ids` computed inside one nnsight trace of `wrapper`.

    `wrapper` is nnsight's model (a meta model for NDIF, or a loaded one); `remote` and
    `backend` are passed to the trace. Equals `compute_lens` on the same model and ids.
    """
    if len(ids) == 0:
        raise NdifError("The prompt is empty: type some text to look through the lens.")
    started = time.perf_counter()
    module = wrapper._module  # the transformers model, to read its structure
    anatomy = find_anatomy(module)
    context = int(getattr(module.config, "max_position_embeddings", 0) or 0)
    if context and len(ids) > context:
        raise NdifError(f"The input has {len(ids)} tokens but the model reads at most "
                        f"{context}. Shorten it.")
    k = min(top_k, anatomy.unembed.weight.shape[0])
    tops = trace_lens_tops(wrapper, torch.tensor([list(ids)]), anatomy.full_layers_path,
                           anatomy.full_norm_path, anatomy.head_path, k, anatomy.softcap,
                           remote=remote, backend=backend)
    top_ids = tops.top_ids.permute(1, 0, 2).numpy().astype(np.int64)
    tokenizer = wrapper.tokenizer
    unique = [int(i) for i in np.unique(top_ids)]
    return LogitLens(
        token_ids=np.asarray(ids, dtype=np.int64),
        token_texts=tuple(token_texts(tokenizer, list(ids))),
        top_ids=top_ids,
        top_probs=tops.top_probs.permute(1, 0, 2).numpy().astype(np.float32),
        final_prob=tops.final_prob.T.numpy().astype(np.float32),
        final_rank=tops.final_rank.T.numpy().astype(np.int32),
        entropy=tops.entropy.T.numpy().astype(np.float32),
        kl_to_final=tops.kl_to_final.T.numpy().astype(np.float32),
        candidate_texts=dict(zip(unique, tokenizer.batch_decode([[i] for i in unique]))),
        model_label=label, seconds=time.perf_counter() - started)


def ndif_lens(model_id: str, prompt: str, *, top_k: int = DEFAULT_TOP_K,
              api_key: str | None = None) -> LogitLens:
    """The logit lens of `prompt` under Hub model `model_id`, computed on NDIF.

    The prompt is tokenized by the model's own tokenizer as `model.trace(prompt)` would
    (with its special tokens). Raises `NdifError` with what to do: no key, the model's
    config unreadable, NDIF unreachable, the key refused, the model not hosted.
    """
    model_id = model_id.strip()
    api_key = api_key or ndif_api_key()
    if not api_key:
        raise NdifError("No NDIF API key is set, so nothing was sent. Get one at "
                        "https://login.ndif.us, then set NDIF_API_KEY (or call "
                        "nnsight.CONFIG.set_default_api_key) and restart Perplex.")
    if not model_id:
        raise NdifError("Enter the Hub id of a model NDIF hosts, e.g. "
                        "meta-llama/Llama-3.1-8B.")
    if not prompt.strip():
        raise NdifError("The prompt is empty: type some text to look through the lens.")
    try:
        wrapper = hub_model(model_id)
    except Exception as exc:  # transformers / huggingface_hub raise many kinds
        raise hub_error(model_id, exc) from exc
    ids = list(wrapper.tokenizer(prompt)["input_ids"])
    try:
        backend = remote_backend(wrapper, api_key)
    except Exception as exc:
        raise hub_error(model_id, exc) from exc
    return run_remote(wrapper, ids, backend, model_id, top_k=top_k)


def run_remote(wrapper, ids: Sequence[int], backend, model_id: str, *,
               top_k: int = DEFAULT_TOP_K) -> LogitLens:
    """`lens_through_nnsight` through `backend`, its failures told as `NdifError`."""
    try:
        return lens_through_nnsight(wrapper, ids, top_k=top_k, backend=backend,
                                    label=f"{model_id} (NDIF)")
    except PerplexError:
        raise
    except Exception as exc:
        raise remote_error(model_id, exc) from exc


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
