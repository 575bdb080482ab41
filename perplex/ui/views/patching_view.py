"""The activation patching sandbox of the Logit Lens page: two prompts, one patch, a sweep."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import short_prob, visible_token
from perplex.engine.protocol import Engine
from perplex.lens.patching import (
    PatchResult,
    aligned_source_position,
    patch_prompts,
    patch_sweep,
    sweep_from_rows,
    sweep_rows,
)
from perplex.modes.runner import Finished, JobItems
from perplex.ui.components import runs
from perplex.ui.shell import resources
from perplex.ui.shell.conditioning import encode_text
from perplex.ui.shell.text import plain
from perplex.workspace.jobs import item_records

PREFIX = "lens.patch"
SWEEP_KEY = f"{PREFIX}.sweep_run"  # the sweep of the prompts shown (ui.runs)
SWEEP_CHUNK = 4  # layers per call: each call runs both prompts once before patching
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
    kind = _sweep_kind(source_ids, target_ids)
    if sweep_button.button("Sweep every layer × position", key=f"{PREFIX}.sweep"):
        runs.start_job(SWEEP_KEY, kind, "patch sweep", {"model": engine.info.label},
                       lambda: [{"layer": n} for n in range(n_layers)])
    sweep = _sweep(engine, source_ids, target_ids, kind)
    result = st.session_state.get(f"{PREFIX}.result")
    if result is not None:
        src = visible_token(result.texts[result.source_answer])
        tgt = visible_token(result.texts[result.target_answer])
        st.markdown(
            f"Patched layer **{result.layer}**, target position **{result.target_position}** "
            f"← source position {result.source_position}: the target's top-1 "
            f"**{plain(result.verdict)}**. "
            f"p(“{plain(src)}”) {short_prob(result.p_source_before)} → "
            f"**{short_prob(result.p_source_after)}**; p(“{plain(tgt)}”) "
            f"{short_prob(result.p_target_before)} → **{short_prob(result.p_target_after)}**.")
        st.dataframe(_result_table(result), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.4f")
                                    for c in ("p before", "p after")})
    if sweep is not None:
        metric = st.segmented_control("Colour", ["p(source answer)", "logit difference"],
                                      default="p(source answer)", key=f"{PREFIX}.metric")
        key = "logit_diff" if metric == "logit difference" else "p_source"
        st.plotly_chart(sweep.figure(key), key=f"{PREFIX}.heatmap")
        made = int(np.count_nonzero(~np.isnan(sweep.p_source)))
        st.caption(f"Sweep: {made:,} patches in {sweep.seconds:.1f} s (layers not swept yet "
                   "are blank). Hover a cell for the patched top-1.")


def _sweep_kind(source_ids: Sequence[int], target_ids: Sequence[int]) -> str:
    """The job kind of a sweep of this pair of prompts (one per pair)."""
    pair = json.dumps([list(source_ids), list(target_ids)]).encode()
    return f"patch sweep:{hashlib.sha256(pair).hexdigest()[:16]}"


def _sweep(engine, source_ids: Sequence[int], target_ids: Sequence[int], kind: str):
    """The layers of this pair's sweep done so far, as a sweep (None: none yet).

    The sweep runs on the one runner, a layer per item: Stop keeps the layers swept,
    Resume sweeps the rest.
    """
    job = runs.shown_job(SWEEP_KEY, kind)
    if job is None:
        return None
    store = resources.store()

    def work(items):
        layers = [i.item["layer"] for i in items]
        swept = patch_sweep(engine, source_ids, target_ids, layers=layers)
        return [Finished(sweep_rows(swept, layer)) for layer in layers]

    runs.drive(SWEEP_KEY, job.id, JobItems(store, job.id, to_json=lambda rows: rows), work,
               unit="layers", chunk=SWEEP_CHUNK,
               can_run=job.settings["model"] == engine.info.label)
    done = [r for r in item_records(store, job.id) if r.status == "done"]
    if not done:
        return None
    seconds = float(sum(r.seconds or 0.0 for r in done))
    return sweep_from_rows(engine, source_ids, target_ids,
                           {r.item["layer"]: r.result for r in done}, seconds)
