"""Hallucination mode's view: alerts while the answer streams, spans, checks, samples."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import entropy_timeline
from perplex.core.records import DecodeParams, Generation, Message, TokenRole
from perplex.engine.protocol import Engine
from perplex.modes import hallucination as h
from perplex.modes.runner import JobItems
from perplex.ui.components import investigate, runs
from perplex.ui.components.live import LiveGeneration, kept
from perplex.ui.components.transcript import (
    highlight_key,
    jump_to,
    provenance_caption,
    show_transcript,
)
from perplex.ui.shell import page_state, resources, session_panel
from perplex.ui.shell.session_settings import AlertSettings
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import count, plain
from perplex.workspace.generation_rows import params_from_dict, params_to_json
from perplex.workspace.jobs import item_records

PREFIX = "halluc"
CURRENT = page_state.current_key(PREFIX)
SAMPLES_KEY = f"{PREFIX}.samples"  # the sampled answers' run (ui.runs)
PERCENT = st.column_config.NumberColumn(format="%.3f")
LIVE_ROWS = 8  # alerts listed while the answer streams (newest first); all of them after


def alert_settings() -> tuple[h.AlertThresholds, int] | None:
    """The thresholds and k from the widgets; None (with the reason shown) when invalid."""
    saved = session_panel.settings().alerts or AlertSettings(
        h.DEFAULT_CONFIDENCE, h.DEFAULT_ENTROPY, h.DEFAULT_SPAN_K)
    cols = st.columns(3)
    confidence = cols[0].number_input(
        "confidence threshold (p)", value=saved.confidence, step=0.05, format="%.3f",
        key=f"{PREFIX}.confidence", help="A token whose probability is under this alerts.")
    entropy = cols[1].number_input(
        "entropy threshold (nats)", value=saved.entropy, step=0.25, format="%.2f",
        key=f"{PREFIX}.entropy", help="A token whose distribution's entropy is over this "
        "alerts. ln 2 ≈ 0.69 nats is a coin flip; ln 10 ≈ 2.3 ten equal choices.")
    k = cols[2].number_input(
        "span length k (tokens)", value=saved.span_k, step=1, key=f"{PREFIX}.k",
        help="A low-confidence token starts a flagged span when the mean entropy of the "
        "k tokens after it is over the entropy threshold.")
    try:
        chosen = h.AlertThresholds(confidence, entropy)
        h.flagged_spans((), chosen, int(k))  # checks k
    except PerplexError as exc:
        st.error(f"{plain(str(exc))} Change it above to see alerts.")
        return None
    wanted = AlertSettings(float(confidence), float(entropy), int(k))
    if wanted != saved:
        session_panel.remember(alerts=wanted)
    return chosen, int(k)


def ask(engine: Engine, params: DecodeParams, question: str, limits: h.AlertThresholds,
        system: tuple[Message, ...]) -> None:
    """Stream the answer with its alerts appearing as the tokens arrive; save it."""
    if not question.strip():
        st.error("The question is empty: type what to ask the model.")
        return
    messages = system + (Message("user", question),)
    th = thresholds()
    left, right = st.columns([3, 2])
    with left:
        view = LiveGeneration(key=f"{PREFIX}-live", confident=th.confident,
                              uncertain=th.uncertain, expected=params.max_new_tokens)
    with right.container(key=f"{PREFIX}-live-alerts"):
        heading, table = st.empty(), st.empty()
        heading.markdown("**Alerts so far: 0**")
    run = engine.generate(messages, params)
    shown, found, marks = [], [], {}
    with kept(run, lambda g: session_panel.save_to_session(g, CURRENT)):
        for step, alert in h.watch(run, limits):
            if step.role is not TokenRole.RESPONSE:
                continue
            shown.append(step)
            if alert is None:
                view.update(shown, alerts=marks)
                continue
            found.append(alert)
            marks[alert.index] = alert.reason
            view.update(shown, alerts=marks, force=True)
            # A static table: drawn at once, where a data grid would flash empty per alert.
            table.table(pd.DataFrame(h.alert_rows(found[:-LIVE_ROWS - 1:-1])).set_index("#")
                        .style.format({"p": "{:.3f}", "entropy (nats)": "{:.3f}"}))
            heading.markdown(
                f"**Alerts so far: {len(found)}** (latest: token #{alert.index}"
                f"{f'; the {LIVE_ROWS} newest shown' if len(found) > LIVE_ROWS else ''})")
    session_panel.save_to_session(run.generation(), CURRENT)
    st.rerun()


def alert_panel(gen: Generation, limits: h.AlertThresholds, k: int) -> None:
    """The answer's alerts (select one to jump to it) and its flagged spans."""
    steps = gen.response_steps
    found = h.alerts(steps, limits)
    spans = h.flagged_spans(steps, limits, k)
    answer_index = steps[0].message_index if steps else 0
    where = (f"the first starts at token #{spans[0].start} "
             f"“{plain(steps[spans[0].start].text.strip() or steps[spans[0].start].text)}”"
             if spans else "none found")
    st.markdown(f"**{count(len(found), 'alert')}** in {count(len(steps), 'token')} · "
                f"**{count(len(spans), 'flagged span')}** (k = {k}): {where}")
    looped = h.answer_repetition(steps)
    st.markdown(("**" + plain(h.repetition_summary(looped)) + "**") if looped.flagged()
                else plain(h.repetition_summary(looped)))
    st.caption(f"Repetition is seq-rep-{looped.n}: of the answer's runs of {looped.n} "
               "consecutive tokens, the share that already occurred earlier in the answer "
               "(1 − distinct / total). Prose scores near 0, a loop near 1; a loop's tokens "
               "are often likely, so neither an alert nor perplexity sees it.")
    if any(s.entropy_is_estimate for s in steps):
        st.caption("These entropies come from the top-k alternatives the engine returned: "
                   "each is a lower bound of the full distribution's, so an entropy alert "
                   "holds for the full distribution too, but a token whose full entropy is "
                   "over the threshold can go unflagged.")
    if found:
        table_key = f"{PREFIX}.alert_table"
        st.dataframe(pd.DataFrame(h.alert_rows(found)), hide_index=True, key=table_key,
                     on_select=lambda: _jump_to_alert(table_key, gen.id, answer_index, found),
                     selection_mode="single-row",
                     column_config={"p": PERCENT, "entropy (nats)": PERCENT})
        st.caption("Select a row to highlight its token in the answer.")
    if spans:
        st.dataframe(pd.DataFrame(h.span_rows(steps, spans)), hide_index=True,
                     column_config={c: PERCENT for c in
                                    ("score", "p at start", "mean entropy after (nats)")})
        st.caption("A doubtful token (p under the confidence threshold) flags itself and the "
                   "k tokens after it when their mean entropy is over the entropy threshold; "
                   "overlapping flags join into one span. score = (1 − p) × that mean "
                   "entropy, the best of the span's doubtful tokens; p and mean entropy "
                   "shown are the first's.")


def _jump_to_alert(table_key: str, generation_id: str, answer_index: int,
                   found: list[h.Alert]) -> None:
    rows = st.session_state[table_key].selection.rows
    if rows and rows[0] < len(found):
        jump_to(highlight_key(PREFIX, generation_id, answer_index), found[rows[0]].index)


def check_panel(engine: Engine, params: DecodeParams, gen: Generation) -> None:
    """Normalised exact match with a reference, or agreement between sampled answers."""
    st.markdown("**Check the answer**")
    reference = st.text_input("Reference answer (optional)", key=f"{PREFIX}.reference",
                              placeholder="e.g. Paris")
    answer = gen.response_text.strip()
    if reference.strip():
        matched = h.exact_match(answer, reference)
        contained = h.normalise_answer(reference) in h.normalise_answer(answer)
        st.markdown(f"Exact match (normalised): **{'yes' if matched else 'no'}** · "
                    f"reference contained in the answer: **{'yes' if contained else 'no'}**")
        st.caption("Normalised: lower case, no punctuation, no articles (a, an, the), "
                   "single spaces.")
        return
    cols = st.columns(2)
    n = cols[0].number_input("answers to sample", 2, h.MAX_SAMPLES, 5, key=f"{PREFIX}.n")
    length = cols[1].number_input("max tokens each", 1, 512,
                                  min(params.max_new_tokens, 48), key=f"{PREFIX}.sample_len")
    key = f"{PREFIX}.consistency.{gen.id}"
    compared = st.radio("Compare", h.COMPARED_PARTS, horizontal=True, key=f"{PREFIX}.compared",
                        help="Sampled answers seldom agree word for word to the end; their "
                             "first sentences usually carry the answer.")
    meaning = f"same meaning (judged by {engine.info.label}, both ways round)"
    grouping = st.radio("Answers agree by", (h.EXACT, meaning), horizontal=True,
                        key=f"{PREFIX}.grouping",
                        help="Exact: the same words after normalisation. Meaning: the "
                             "sidebar's model is asked whether two answers say the same "
                             "thing, in both orders (semantic-entropy grouping); it costs two "
                             "judge calls per pair compared.")
    question = tuple(m for m in gen.messages if m.role != "assistant")
    if st.button("Sample answers", key=f"{PREFIX}.sample", disabled=session_panel.read_only(),
                 help="Samples with seeds 0…N−1 at the decoding temperature (1 when greedy)."):
        runs.start_job(SAMPLES_KEY, f"samples:{gen.id}", f"{int(n)} answers",
                       {"model": engine.info.label, "params": json.loads(
                           params_to_json(replace(params, max_new_tokens=int(length))))},
                       lambda: [{"seed": seed} for seed in range(h.check_samples(int(n)))])
    sampled = _samples(engine, question, gen.id, compared)
    if sampled is not None:
        same = None if grouping == h.EXACT else h.judged_same(engine, gen.last_user_text)
        grouped = st.session_state.setdefault(f"{key}.grouped", {})  # judge calls cost
        try:
            if (sampled, compared, grouping) not in grouped:
                with st.spinner("Grouping the answers…"):
                    grouped[(sampled, compared, grouping)] = h.consistency(
                        sampled.answers, sampled.seeds, compared, same, grouping)
            result = grouped[(sampled, compared, grouping)]
        except PerplexError as exc:
            st.error(f"The judge could not compare the answers: {plain(str(exc))} Group them "
                     "by exact match instead.")
            return
        st.markdown(f"Consistency **estimate** on their {compared}, by {plain(grouping)}: "
                    f"{result.summary()}"
                    + (f"; the largest group says “{plain(result.majority_answer)}”"
                       if result.largest > 1 else "."))
        if result.others:
            st.markdown("Answers outside the largest group:\n" + "\n".join(
                f"- “{plain(' '.join(text.split()))}”" for text in result.others))
        st.caption("An estimate from a few samples. Exact match normalises first (lower case, "
                   "no punctuation or articles); a small largest group, or many distinct "
                   "answers, suggests the model is not settled on an answer.")


def _samples(engine: Engine, question: tuple[Message, ...], generation_id: str,
             compared: str) -> h.Consistency | None:
    """The sampled answers' run for this answer: Stop keeps the answers sampled so far."""
    job = runs.shown_job(SAMPLES_KEY, f"samples:{generation_id}")
    if job is None:
        return None
    store = resources.store()
    work = h.sample_work(engine, question, params_from_dict(job.settings["params"]))
    runs.drive(SAMPLES_KEY, job.id, JobItems(store, job.id, to_json=lambda found: found), work,
               unit="answers", can_run=job.settings["model"] == engine.info.label)
    done = [r for r in item_records(store, job.id) if r.status == "done"]
    if len(done) < 2:
        return None
    return h.consistency([r.result["answer"] for r in done], [r.item["seed"] for r in done],
                         compared)


def answer_section(current: Generation, settings: tuple[h.AlertThresholds, int] | None,
                   engine: Engine, local, params: DecodeParams) -> None:
    """The answer on screen: its token view with alerts, the alerts and spans, the checks."""
    limits, k = settings if settings is not None else (None, 0)
    event = show_transcript(
        current, PREFIX, thresholds(), extras=investigate.view_extras,
        alerts=(lambda steps: h.alert_marks(steps, limits)) if limits else None,
        timeline=(lambda steps, highlight: h.alert_timeline(steps, limits, highlight))
        if limits else entropy_timeline)
    provenance_caption(current)
    left, right = st.columns([3, 2], gap="large")
    with left:
        if limits is not None:
            alert_panel(current, limits, k)
    with right:
        check_panel(engine, params, current)
    investigate.comparison_panel(CURRENT)
    investigate.branch_navigator(CURRENT)
    investigate.act_on(event, current, CURRENT, local, params)
