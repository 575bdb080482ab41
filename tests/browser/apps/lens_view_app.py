"""Test app: the lens view on a synthetic 300-token × 31-layer lens (no model)."""

import numpy as np
import streamlit as st

from perplex.lens.logit_lens import LogitLens
from perplex.ui.components.lens_view import lens_view

T, LAYERS, K = 300, 31, 10
rng = np.random.default_rng(0)
top_ids = rng.integers(0, 500, size=(T, LAYERS, K))
top_ids[:, -8:, 0] = top_ids[:, -1:, 0]  # the last layers agree with the output
probs = np.sort(rng.dirichlet(np.ones(K), size=(T, LAYERS)).astype(np.float32), axis=-1)[..., ::-1]
lens = LogitLens(
    token_ids=np.arange(T), token_texts=tuple(f" w{i}" for i in range(T)), top_ids=top_ids,
    top_probs=np.ascontiguousarray(probs), final_prob=probs[..., 0].copy(),
    final_rank=rng.integers(1, 3000, size=(T, LAYERS)).astype(np.int32),
    entropy=np.ones((T, LAYERS), np.float32), kl_to_final=np.zeros((T, LAYERS), np.float32),
    candidate_texts={i: f" c{i}<b>" for i in range(500)})
st.session_state["runs"] = st.session_state.get("runs", 0) + 1
picked = lens_view(lens, key="lens-test", selected=st.session_state.get("picked"))
if picked is not None:
    st.session_state["picked"] = picked
st.write(f"runs: {st.session_state['runs']} · picked: {st.session_state.get('picked')}")
