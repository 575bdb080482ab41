"""The activation patching sandbox of the Logit Lens page: two prompts, one patch, a sweep."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import short_prob, visible_token
from perplex.engine.protocol import Engine
from perplex.lens.patching import PatchResult, aligned_source_position, patch_prompts, patch_sweep
from perplex.ui.conditioning import encode_text
from perplex.ui.text import plain

PREFIX = "lens.patch"
SOURCE = "The Eiffel Tower is in the city of"
TARGET = "The Colosseum is in the city of"


def _result_table(result: PatchResult) -> pd.DataFrame:
    rows = []
    for rank in range(len(result.before_ids)):
        rows.append({
            "rank": rank + 1,
            "before": visible_token(result.texts[int(result.before_ids[rank])]),
            "p before": float(result.before_probs[rank]),
            "after": visible_token(result.texts[int(result.after_ids[rank])]),
            "p after": float(result.after_probs[rank])})
    return pd.DataFrame(rows)


def subject_note(subject: list[int], default: int, source_ids, target_ids, vocab) -> str:
    """Why the position offered first is offered: the middle of where the prompts differ."""
    if not subject:
        return (f"The prompts do not differ token by token, so position {default}, the last, "
                "is offered first. The sweep shows every position.")
    aligned = [aligned_source_position(t, len(source_ids), len(target_ids)) for t in subject]
    target = "".join(vocab[target_ids[t]] for t in subject)
    source = "".join(vocab[source_ids[s]] for s in aligned)
    return (f"The prompts differ at positions {subject[0]}–{subject[-1]}: that is the subject "
            f"(“{plain(target.strip())}” ← “{plain(source.strip())}”). Offered first: its "
            f"middle token, position {default}, where the subject's identity is being read; "
            "the sweep below shows every layer × position.")


def patching_section(engine: Engine) -> None:
    """Patch one residual from a source prompt into a target prompt, or sweep them all."""
    st.caption("Copy the residual stream at one layer and position from the source prompt's "
               "run into the target prompt's run, and watch the target's next-token "
               "prediction. Layer 0 is the embedding, layer l the output of block l. Prompts "
               "of different lengths are aligned from the end.")
    left, right = st.columns(2)
    source = left.text_input("Source prompt", SOURCE, key=f"{PREFIX}.source")
    target = right.text_input("Target prompt", TARGET, key=f"{PREFIX}.target")
    try:
        source_ids = list(encode_text(engine, source).ids) if source.strip() else []
        target_ids = list(encode_text(engine, target).ids) if target.strip() else []
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    if not source_ids or not target_ids:
        st.info("Type both prompts.")
        return
    vocab = engine.vocab_texts
    n_layers = engine.info.n_layers + 1
    layer_col, position_col = st.columns(2)
    layer = layer_col.slider("Layer to patch", 0, n_layers - 1, min(12, n_layers - 1),
                             key=f"{PREFIX}.layer")

    def label(t: int) -> str:
        s = aligned_source_position(t, len(source_ids), len(target_ids))
        taken = visible_token(vocab[source_ids[s]]) if s is not None else "—"
        return f"{t}: {visible_token(vocab[target_ids[t]])} ← {taken}"

    subject = [t for t in range(len(target_ids))
               if (s := aligned_source_position(t, len(source_ids), len(target_ids))) is not None
               and source_ids[s] != target_ids[t]]
    default = subject[len(subject) // 2] if subject else len(target_ids) - 1
    position = position_col.selectbox("Target position (← source token)",
                                      range(len(target_ids)), index=default,
                                      format_func=label, key=f"{PREFIX}.position")
    st.caption(subject_note(subject, default, source_ids, target_ids, vocab))
    one, sweep_button = st.columns(2)
    if one.button("Patch this residual", type="primary", key=f"{PREFIX}.run"):
        try:
            with st.spinner("Running both prompts…"):
                st.session_state[f"{PREFIX}.result"] = patch_prompts(
                    engine, source_ids, target_ids, layer=layer, target_position=position)
        except PerplexError as exc:
            st.error(plain(str(exc)))
    if sweep_button.button("Sweep every layer × position", key=f"{PREFIX}.sweep"):
        bar = st.progress(0.0, text="Patching…")
        try:
            st.session_state[f"{PREFIX}.sweep_result"] = patch_sweep(
                engine, source_ids, target_ids, progress=lambda done, total: bar.progress(
                    done / total, text=f"Patched layers: forward pass {done}/{total}"))
        except PerplexError as exc:
            st.error(plain(str(exc)))
        bar.empty()
    result = st.session_state.get(f"{PREFIX}.result")
    if result is not None:
        src = visible_token(result.texts[result.source_answer])
        tgt = visible_token(result.texts[result.target_answer])
        verdict = "flips to the source's answer" if result.flipped else "keeps another answer"
        st.markdown(
            f"Patched layer **{result.layer}**, target position **{result.target_position}** "
            f"← source position {result.source_position}: the target's top-1 "
            f"**{plain(verdict)}**. p(“{plain(src)}”) {short_prob(result.p_source_before)} → "
            f"**{short_prob(result.p_source_after)}**; p(“{plain(tgt)}”) "
            f"{short_prob(result.p_target_before)} → **{short_prob(result.p_target_after)}**.")
        st.dataframe(_result_table(result), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.4f")
                                    for c in ("p before", "p after")})
    sweep = st.session_state.get(f"{PREFIX}.sweep_result")
    if sweep is not None:
        metric = st.segmented_control("Colour", ["p(source answer)", "logit difference"],
                                      default="p(source answer)", key=f"{PREFIX}.metric")
        key = "logit_diff" if metric == "logit difference" else "p_source"
        st.plotly_chart(sweep.figure(key), key=f"{PREFIX}.heatmap")
        st.caption(f"Sweep: {sweep.p_source.size} patches in {sweep.seconds:.1f} s. Hover a "
                   "cell for the patched top-1.")
