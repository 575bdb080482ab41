"""The logit lens of a larger model, run remotely on NDIF through the NDIF engine.

The projection through the final norm and unembedding runs inside the engine's one trace,
on NDIF's GPUs; only the top-k candidates and per-position statistics come back. The
result is the same `LogitLens` the local lens gives, so the page draws both with one view.
Locally only the model's config and tokenizer are read from the Hub (a meta model: no
weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perplex.engine import registry
from perplex.engine.ndif import NdifError, hub_error, ndif_api_key, remote_error
from perplex.lens.logit_lens import DEFAULT_TOP_K, LogitLens

__all__ = ["NdifError", "engine_lens", "hub_error", "lens_through_nnsight", "ndif_lens",
           "remote_error", "run_remote"]


def engine_lens(engine, ids: Sequence[int], *, top_k: int = DEFAULT_TOP_K,
                label: str | None = None) -> LogitLens:
    """The `LogitLens` an NDIF engine computes in one trace ([L+1, T, ...] made position-major)."""
    run = engine.lens(ids, top_k)
    tops = run.tops
    return LogitLens(
        token_ids=np.asarray(run.ids, dtype=np.int64),
        token_texts=run.token_texts,
        top_ids=tops.top_ids.permute(1, 0, 2).numpy().astype(np.int64),
        top_probs=tops.top_probs.permute(1, 0, 2).numpy().astype(np.float32),
        final_prob=tops.final_prob.T.numpy().astype(np.float32),
        final_rank=tops.final_rank.T.numpy().astype(np.int32),
        entropy=tops.entropy.T.numpy().astype(np.float32),
        kl_to_final=tops.kl_to_final.T.numpy().astype(np.float32),
        candidate_texts=run.candidate_texts,
        model_label=engine.info.label if label is None else label, seconds=run.seconds)


def lens_through_nnsight(wrapper, ids: Sequence[int], *, top_k: int = DEFAULT_TOP_K,
                         label: str = "", remote: bool | str = False,
                         backend=None) -> LogitLens:
    """The logit lens of token ids `ids` computed inside one nnsight trace of `wrapper`.

    `wrapper` is nnsight's model (a meta model for NDIF, or a loaded one); `remote` and
    `backend` say how the trace is sent. Equals `compute_lens` on the same model and ids.
    """
    engine = registry.nnsight_engine(wrapper, label, remote=remote, backend=backend)
    return engine_lens(engine, ids, top_k=top_k, label=label)


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
    engine = registry.ndif_engine(model_id, api_key)
    return engine_lens(engine, engine.prompt_ids(prompt), top_k=top_k)


def run_remote(wrapper, ids: Sequence[int], backend, model_id: str, *,
               top_k: int = DEFAULT_TOP_K) -> LogitLens:
    """The lens of `ids` through `backend`, its failures told as `NdifError`."""
    engine = registry.nnsight_engine(wrapper, f"{model_id} (NDIF)", backend=backend)
    return engine_lens(engine, ids, top_k=top_k)
