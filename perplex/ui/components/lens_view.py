"""The logit-lens view: every position's prediction at a chosen layer, scrubbed in the browser.

A Streamlit custom component (v2), registered once at import. All layers' top-1 texts
are sent once; the layer slider inside the component changes the text without a Python
rerun. Under each token a rank stripe has one segment per layer, coloured by the rank of
the final prediction at that layer (blue = top-1, yellow = rank ≥ 1000). Hover: that
layer's top 3. Click: the position comes back to Python (one rerun)::

    picked = lens_view(lens, key="lens-view", selected=st.session_state.get("pos"))

Token and candidate texts are untrusted: `lens_view.js` sets them with `textContent` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from perplex.lens.logit_lens import LogitLens

_HERE = Path(__file__).parent
_HTML = ('<div class="lv-root"><div class="lv-bar"></div><div class="lv-tokens"></div>'
         '<div class="lv-tip" role="tooltip"></div></div>')
_COMPONENT = st.components.v2.component(
    "perplex.lens_view",
    html=_HTML,
    css=(_HERE / "lens_view.css").read_text(encoding="utf-8"),
    js=(_HERE / "lens_view.js").read_text(encoding="utf-8"),
)
TOOLTIP_CANDIDATES = 3


def significant(values: np.ndarray, digits: int = 4) -> np.ndarray:
    """`values` to `digits` significant digits, so a small probability never reads as 0.

    Dividing a whole number by an exact power of ten gives the double nearest the
    decimal, so each value travels in a few characters. Zeros stay zero.
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore"):
        magnitude = np.floor(np.log10(np.abs(values)))
    scale = 10.0 ** (digits - 1 - np.where(np.isfinite(magnitude), magnitude, 0))
    return np.round(values * scale) / scale


def lens_payload(lens: LogitLens, first: int = 0) -> dict:
    """JSON-able data for the view, from position `first` on (earlier ones are context).

    `cand`: candidate texts, referenced by index everywhere else. `top1[l][i]`: candidate
    index of layer l's top-1 at shown position i. Per shown position: `t` its input text,
    `pos` its position, `rank`/`p`: the final top-1's rank and probability per layer,
    `top`: per layer `[[candidate, p], ...]` (top 3), `lock`: lock-in layer.
    """
    shown = range(first, lens.n_positions)
    texts: dict[int, int] = {}
    cand: list[str] = []

    def index(token_id: int) -> int:
        if token_id not in texts:
            texts[token_id] = len(cand)
            cand.append(lens.text(token_id))
        return texts[token_id]

    k = min(TOOLTIP_CANDIDATES, lens.top_ids.shape[2])
    top_ids = lens.top_ids[first:, :, :k].tolist()
    top_probs = significant(lens.top_probs[first:, :, :k]).tolist()
    final_p = significant(lens.final_prob[first:]).tolist()
    lock = lens.lock_in[first:].tolist()
    tokens = []
    for i, t in enumerate(shown):
        tokens.append({
            "t": lens.token_texts[t], "pos": t, "rank": lens.final_rank[t].tolist(),
            "p": final_p[i], "lock": lock[i],
            "top": [[[index(tid), p] for tid, p in zip(ids, probs)]
                    for ids, probs in zip(top_ids[i], top_probs[i])]})
    top1 = [[index(int(lens.top_ids[t, layer, 0])) for t in shown]
            for layer in range(lens.n_layers)]
    sig = f"{lens.model_label}:{first}:{hash(lens.token_ids.tobytes())}"
    return {"cand": cand, "top1": top1, "tokens": tokens, "layers": lens.n_layers, "sig": sig}


def _ignore() -> None:
    """Do nothing: passing a callback is what declares the "click" trigger to Streamlit."""


def lens_view(lens: LogitLens, *, key: str, first: int = 0,
              selected: int | None = None) -> int | None:
    """Show the lens from position `first`; return the position clicked in this rerun."""
    data = lens_payload(lens, first)
    data["selected"] = selected
    result = _COMPONENT(key=key, data=data, on_click_change=_ignore, height="content")
    click = result.get("click")
    if isinstance(click, dict) and isinstance(click.get("pos"), int) \
            and first <= click["pos"] < lens.n_positions:
        return click["pos"]
    return None
