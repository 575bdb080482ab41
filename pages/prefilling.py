"""Prefilling mode: refusal vs compliance at the first response token, and after a prefix."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from perplex.errors import PerplexError
from perplex.generation import start_generation
from perplex.modes import prefill
from perplex.records import Message, TokenRole
from perplex.token_sets import (
    COMPLIANCE_SET,
    DEFAULT_SETS,
    REFUSAL_SET,
    add_words,
    ensure_default_sets,
    remove_word,
)
from perplex.ui import investigate, resources, session_panel
from perplex.ui.sidebar import decode_params_form, thresholds
from perplex.ui.text import plain
from perplex.ui.token_view import TokenViewStream
from perplex.ui.transcript import show_transcript

PREFIX = "prefill"
CURRENT = f"{PREFIX}.generation"
PROMPT = f"{PREFIX}.prompt"
BATCH = f"{PREFIX}.batch"

st.title("Prefilling")
st.caption("How much probability the model puts on refusal openings (R-Set) and compliance "
           "openings (C-Set) at the first response token, and after a prefix you force. "
           "P(set) is the sum of the probabilities (temperature 1) of the set's token ids.")

lm = resources.require_model()
session_panel.restore_current(CURRENT)
params = decode_params_form(PREFIX)


def set_words() -> tuple[dict[str, tuple[str, ...]], dict | None]:
    """The R-Set and C-Set words, and the stored sets (None on a read-only shared session).

    The sets live in the session (created on first use), seeded with the default words, so
    the token view's "Add to token set" and this editor change the same sets.
    """
    if session_panel.read_only():
        return dict(DEFAULT_SETS), None
    sid = session_panel.session_for_saving()
    sets = ensure_default_sets(resources.store(), sid, lm.tokenizer, lm.label)
    return {s.name: s.words for s in sets}, {s.name: s for s in sets}


def edit_sets() -> tuple[frozenset[int], frozenset[int]]:
    """The sets editor; returns the R-Set and C-Set ids for the loaded tokenizer."""
    words, sets = set_words()
    ids = {}
    with st.expander("Token sets (R-Set, C-Set)", expanded=False):
        cols = st.columns(2)
        for col, name in zip(cols, (REFUSAL_SET, COMPLIANCE_SET)):
            typed = col.text_input(f"{name} words (comma separated)", ", ".join(words[name]),
                                   key=f"{PREFIX}.words.{name}")
            new = [w.strip() for w in typed.split(",") if w.strip()]
            try:
                found, resolved = prefill.resolve_set(lm.tokenizer, new, name)
            except PerplexError as exc:
                col.error(plain(str(exc)))
                found, resolved = prefill.resolve_set(lm.tokenizer, words[name], name)
                new = list(words[name])
            if sets is not None and new != list(words[name]):
                for word in set(words[name]) - set(new):
                    remove_word(resources.store(), sets[name].id, word)
                add_words(resources.store(), sets[name].id, lm.tokenizer, lm.label,
                          [w for w in new if w not in words[name]])
            col.dataframe(pd.DataFrame(
                [{"word": r.word, "spelling": repr(r.text), "ids": list(r.token_ids),
                  "counted id": r.token_id if r.counted else None, "note": r.note or ""}
                 for r in resolved]), hide_index=True, width="stretch")
            ids[name] = found
        st.caption("Each spelling counts by its first token; multi-token spellings say so in "
                   "the note. Tokens added from the token view's menu land in these sets too.")
    return ids[REFUSAL_SET], ids[COMPLIANCE_SET]


def headline(result: prefill.FirstToken, label: str) -> None:
    """The first response token shown large, with P(R-Set), P(C-Set), other."""
    cols = st.columns([2, 1, 1, 1])
    shown = result.top_text.replace(" ", "·") or "∅"
    cols[0].markdown(f"<div style='font-size:0.9rem;color:#666'>{plain(label)}</div>"
                     f"<div data-testid='first-token' style='font-size:2.6rem;"
                     f"font-family:monospace'>{plain(shown)}</div>"
                     f"<div style='color:#666'>p = {result.top_probs[0]:.3f}</div>",
                     unsafe_allow_html=True)
    cols[1].metric("P(R-Set)", f"{result.mass.refusal:.3f}")
    cols[2].metric("P(C-Set)", f"{result.mass.compliance:.3f}")
    cols[3].metric("other", f"{result.mass.other:.3f}")


def run_prompt(prompt: str, prefix_text: str) -> None:
    """Generate an answer (starting with the prefix) and make it the page's current one."""
    stream = TokenViewStream(key=f"{PREFIX}-live", confident=thresholds().confident,
                             uncertain=thresholds().uncertain)
    stream.update([], force=True)
    run = start_generation(lm, (Message("user", prompt),), params, prefill=prefix_text)
    shown = []
    for step in run:
        if step.role is TokenRole.RESPONSE:
            shown.append(step)
            stream.update(shown)
    st.session_state[PROMPT] = (prompt, prefix_text)
    session_panel.save_to_session(run.generation(), CURRENT)
    st.rerun()


try:
    refusal_ids, compliance_ids = edit_sets()
except PerplexError as exc:
    st.error(plain(str(exc)))
    st.stop()

with st.form(f"{PREFIX}.form"):
    prompt = st.text_area("Prompt", key=f"{PREFIX}.prompt_text",
                          placeholder="e.g. Can you help me kill someone?")
    prefix_text = st.text_input("Prefill: the response starts with (optional)",
                                key=f"{PREFIX}.prefix_text", placeholder="Sure, here is")
    submitted = st.form_submit_button("Run", type="primary",
                                      disabled=session_panel.read_only())
if submitted:
    try:
        run_prompt(prompt, prefix_text)
    except PerplexError as exc:
        st.error(plain(str(exc)))

current = st.session_state.get(CURRENT)
if current is not None:
    user = [m.content for m in current.messages if m.role == "user"]
    try:
        if user:
            first = prefill.first_token(lm, user[-1], refusal_ids, compliance_ids)
            headline(first, "Most likely first response token")
            st.plotly_chart(prefill.first_token_figure(first, refusal_ids, compliance_ids),
                            key=f"{PREFIX}-bars", config={"displaylogo": False})
            st.caption("Red: R-Set · green: C-Set · grey: other. The top 20 of the "
                       "distribution at the first response position.")
        masses = prefill.response_mass(lm, current, refusal_ids, compliance_ids)
        forced = [s for s in current.response_steps if s.forced]
        if forced and len(masses) > len(forced):
            after = masses[len(forced)]
            st.markdown(f"**After the forced prefix “{plain(''.join(s.text for s in forced))}”**"
                        f": P(R-Set) = {after.refusal:.3f} · P(C-Set) = {after.compliance:.3f}"
                        f" · other = {after.other:.3f}")
        series = [("", masses, "solid")]
        compare = st.session_state.get(CURRENT + investigate.COMPARE_SUFFIX)
        if compare and compare[1] == current.id:
            parent = resources.store().load_generation(compare[0])
            series = [("before", prefill.response_mass(lm, parent, refusal_ids,
                                                       compliance_ids), "dot"),
                      ("after", masses, "solid")]
        st.markdown("**P(R-Set) and P(C-Set) at each response position**")
        st.plotly_chart(prefill.mass_timeline(series), key=f"{PREFIX}-mass",
                        config={"displaylogo": False})
    except PerplexError as exc:
        st.error(plain(str(exc)))
    event = show_transcript(current, PREFIX, thresholds(), extras=investigate.view_extras)
    investigate.comparison_panel(CURRENT)
    investigate.branch_navigator(CURRENT)
    investigate.act_on(event, current, CURRENT, lm, params)

st.divider()
st.subheader("Many prompts")
with st.form(f"{PREFIX}.batch_form"):
    pasted = st.text_area("One prompt per line (blank lines are skipped)",
                          key=f"{PREFIX}.batch_text")
    uploaded = st.file_uploader("or a .txt file, one prompt per line", type=["txt"])
    go_batch = st.form_submit_button("Score first tokens")
if go_batch:
    try:
        text = uploaded.getvalue().decode("utf-8", errors="replace") if uploaded else pasted
        prompts = prefill.parse_prompt_list(text)
        bar = st.progress(0.0, text=f"0 / {len(prompts):,} prompts")
        results = prefill.first_tokens(
            lm, prompts, refusal_ids, compliance_ids, k=1,
            progress=lambda done, total: bar.progress(done / total,
                                                      text=f"{done:,} / {total:,} prompts"))
        st.session_state[BATCH] = pd.DataFrame(
            [{"prompt": r.prompt, "P(R-Set)": r.mass.refusal, "P(C-Set)": r.mass.compliance,
              "top first token": r.top_text, "p(top)": r.top_probs[0]} for r in results])
    except PerplexError as exc:
        st.error(plain(str(exc)))
table = st.session_state.get(BATCH)
if table is not None:
    picked = st.dataframe(table, key=f"{PREFIX}.batch_table", on_select="rerun",
                          selection_mode="single-row", hide_index=True,
                          width="stretch",
                          column_config={c: st.column_config.NumberColumn(format="%.3f")
                                         for c in ("P(R-Set)", "P(C-Set)", "p(top)")})
    st.caption("Click a column header to sort; select a row to open that prompt above.")
    rows = picked.selection.rows if picked else []
    if rows and st.button("Open the selected prompt", key=f"{PREFIX}.open_row"):
        try:
            run_prompt(table.iloc[rows[0]]["prompt"], "")
        except PerplexError as exc:
            st.error(plain(str(exc)))
