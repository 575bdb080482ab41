"""The Persona Traits page's sections: vectors, a monitored answer, baseline vs steered."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import streamlit as st
import torch

from perplex.core.errors import InputFormatError, PerplexError
from perplex.core.plots import caption_line, visible_token
from perplex.core.records import DecodeParams, Message, TokenRole, TokenStep, new_id
from perplex.core.trait_monitoring import MonitoredRun, MonitoringRecord, parse_monitoring
from perplex.core.traits import TraitVector
from perplex.engine.protocol import Engine, Steering
from perplex.engine.registry import endpoint_engine
from perplex.modes.runner import JobItems
from perplex.modes.traits import plots
from perplex.modes.traits.definitions import Trait, parse_trait, shipped_traits
from perplex.modes.traits.judge import engine_judge
from perplex.modes.traits.monitor import Monitor, monitor_generate
from perplex.modes.traits.sweep import MAX_POINTS, coefficient_sweep
from perplex.modes.traits.vectors import (
    GENERATION_BATCH,
    RESPONSE_TOKENS,
    answer_items,
    answer_work,
    extract_prompt_last,
    finishing_steps,
    vector_from_answers,
)
from perplex.ui.components import runs
from perplex.ui.components.export_panel import download, figure_downloads
from perplex.ui.components.file_input import uploaded_file
from perplex.ui.components.token_view import Overlay, token_view
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.text import plain
from perplex.workspace.exports import (
    frame_csv,
    monitoring_frame,
    monitoring_parquet,
    provenance,
    with_provenance,
)
from perplex.workspace.jobs import (
    item_records,
    load_job,
    reset_failed,
    update_job_settings,
)
from perplex.workspace.trait_run_store import (
    TraitRunSummary,
    list_trait_runs,
    load_trait_run,
    save_imported,
    save_trait_run,
)
from perplex.workspace.trait_store import import_pt, latest_vectors, save_vector

PREFIX = "traits"
VECTORS_KEY = f"{PREFIX}.vectors"  # {(model label, trait): TraitVector} of this session
LAYERS_KEY = f"{PREFIX}.layers"  # {trait: layer} chosen per trait
OWN_KEY = f"{PREFIX}.own"  # {name: Trait} added or edited on the page (this session)
RUN_KEY = f"{PREFIX}.run"  # the monitored answer on screen
PAIR_KEY = f"{PREFIX}.pair"  # (baseline, steered) on screen
SWEEP_KEY = f"{PREFIX}.sweep"  # (trait, sweep points) on screen
IMPORTED_KEY = f"{PREFIX}.imported_records"  # monitor-file records on screen
ANSWERS_KEY, ANSWERS_KIND = f"{PREFIX}.answers", "trait answers"  # response-average (ui.runs)
JUDGE_KEY = f"{PREFIX}.judge_api_key"  # the judge endpoint's key: this session's memory only
JUDGES = {"none": "none", "local": "the loaded model", "endpoint": "an OpenAI-compatible endpoint"}


def traits() -> dict[str, Trait]:
    """The shipped traits, with this session's own added or edited ones over them."""
    return {**shipped_traits(), **st.session_state.get(OWN_KEY, {})}


def trait_editor() -> None:
    """Add or edit a trait in the persona_vectors JSON format, validated."""
    with st.expander("Add or edit a trait (persona_vectors JSON: instruction, questions, "
                     "eval_prompt)"):
        known = traits()
        start = st.selectbox("Start from", ["(empty)", *known], key=f"{PREFIX}.edit_from")
        name = st.text_input("Name", value="" if start == "(empty)" else start,
                             key=f"{PREFIX}.edit_name.{start}")
        text = st.text_area("Definition", height=220, key=f"{PREFIX}.edit_text.{start}",
                            value="" if start == "(empty)" else known[start].to_json())
        if st.button("Use this trait", key=f"{PREFIX}.edit_save"):
            try:
                trait = parse_trait(name.strip(), text)
            except PerplexError as exc:
                st.error(plain(str(exc)))
                return
            st.session_state.setdefault(OWN_KEY, {})[trait.name] = trait
            st.success(f"{plain(trait.name)}: {len(trait.pairs)} instruction pairs, "
                       f"{len(trait.questions)} questions (kept in this browser session).")


def vectors_section(engine: Engine, chosen: list[str]) -> dict[str, TraitVector]:
    """Extract (or import) the chosen traits' vectors; per-layer statistics; pick layers."""
    held: dict = st.session_state.setdefault(VECTORS_KEY, {})
    label = engine.info.label
    how = extraction_form()
    wanted = (how.variant, "imported")

    def lacking(names: list[str]) -> list[str]:
        return [t for t in names
                if (label, t) not in held or held[(label, t)].variant not in wanted]

    missing = lacking(chosen)
    if missing:  # saved earlier (another tab, before a reload): opened, not recomputed
        for trait, vector in latest_vectors(resources.store(), label, how.variant).items():
            if trait in missing:
                held[(label, trait)] = vector
        missing = lacking(missing)
    cols = st.columns([2, 1, 3])
    if cols[0].button(f"Extract {len(missing)} vector(s) ({how.variant.replace('_', '-')})",
                      type="primary", disabled=not missing or session_panel.read_only(),
                      key=f"{PREFIX}.extract"):
        if how.variant == "prompt_last":
            _extract(engine, missing, held, how)
        else:
            _start_answers(engine, missing, how)
    _answers_run(engine, held)
    _import_pt(engine, chosen, held)
    ready = {t: held[(label, t)] for t in chosen if (label, t) in held}
    if not ready:
        return {}
    layers = st.session_state.setdefault(LAYERS_KEY, {})
    rows = []
    for name, vector in ready.items():
        layer = layers.get(name, vector.default_layer)
        auroc = vector.auroc[layer]
        rows.append({"trait": name, "layer": layer, "‖v‖ there": vector.norms[layer],
                     "held-out AUROC there": None if math.isnan(auroc) else auroc,
                     "best layer": vector.default_layer, "variant": vector.variant})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    shown = st.selectbox("Per-layer statistics of", list(ready), key=f"{PREFIX}.stats_of")
    vector = ready[shown]
    layer = st.slider(f"Layer used for {shown}", 0, vector.n_layers,
                      layers.get(shown, vector.default_layer), key=f"{PREFIX}.layer.{shown}")
    layers[shown] = layer
    st.plotly_chart(plots.layer_statistics(vector, layer), key=f"{PREFIX}.layer_chart")
    st.caption("AUROC: a vector from the first 70% of the questions, projections of the other "
               "30% (positive vs negative system prompt) on it. The best layer is picked on "
               "these same held-out questions, so its AUROC is optimistic.")
    return ready


@dataclass(frozen=True)
class Extraction:
    """How vectors are extracted: the variant, answer length and judge (response-average)."""

    variant: str = "prompt_last"
    max_new_tokens: int = RESPONSE_TOKENS
    judge: str = "none"  # "none", "local" (the loaded model) or "endpoint"
    endpoint: tuple[str, str] = ("", "")  # base URL and model; the key stays in memory


def extraction_form() -> Extraction:
    """The variant and, for response-average, the answer length and the judge."""
    variant = st.radio("Variant", ["prompt_last", "response_average"], horizontal=True,
                       key=f"{PREFIX}.variant",
                       format_func={"prompt_last": "prompt-last (forward passes: seconds)",
                                    "response_average": "response-average (answers are "
                                                        "generated: minutes)"}.get)
    if variant == "prompt_last":
        return Extraction()
    cols = st.columns([1, 2])
    tokens = int(cols[0].number_input("Answer tokens at most", 4, 256, RESPONSE_TOKENS,
                                      key=f"{PREFIX}.answer_tokens"))
    judge = cols[1].radio("Judge (keeps pairs scored ≥ 50 positive, < 50 negative)",
                          list(JUDGES), format_func=JUDGES.get, horizontal=True,
                          key=f"{PREFIX}.judge")
    endpoint = ("", "")
    if judge == "endpoint":
        cols = st.columns(3)
        endpoint = (cols[0].text_input("Judge's base URL", key=f"{PREFIX}.judge_url",
                                       placeholder="http://127.0.0.1:8000/v1").strip(),
                    cols[1].text_input("Judge's model", key=f"{PREFIX}.judge_model").strip())
        cols[2].text_input("Judge's API key (kept in memory only)", type="password",
                           key=JUDGE_KEY)
    if judge != "none":
        st.caption("The judge reads each answer with the trait's eval_prompt and replies "
                   "with a number 0–100. The bundled 135M model does not follow such a "
                   "rubric (it answers prose, or 100 for everything): use a larger model "
                   "behind an endpoint.")
    return Extraction("response_average", tokens, judge, endpoint)


def _judge(engine: Engine, how: Extraction, trait: Trait):
    if how.judge == "none":
        return None
    if how.judge == "local":
        return engine_judge(engine, trait.eval_prompt)
    url, model = how.endpoint
    if not url or not model:
        raise InputFormatError("Give the judge's base URL and model, or choose no judge.")
    return engine_judge(endpoint_engine(url, model, st.session_state.get(JUDGE_KEY, "")),
                        trait.eval_prompt)


def _extract(engine: Engine, names: list[str], held: dict, how: Extraction) -> None:
    """Prompt-last vectors: forward passes only, a bar per pass."""
    defs = traits()
    bar = st.progress(0.0, text="Extracting…")
    started = time.monotonic()
    for k, name in enumerate(names):
        def progress(done: int, total: int, k=k, name=name) -> None:
            share = (k + done / total) / len(names)
            spent = time.monotonic() - started
            left = f" · about {spent / share * (1 - share):.0f} s left" if share > 0 else ""
            bar.progress(share, text=f"{plain(name)}: {done}/{total} forward passes · trait "
                                     f"{k + 1} of {len(names)}{left}")
        try:
            vector = extract_prompt_last(engine, defs[name], progress)
        except PerplexError as exc:
            st.error(plain(str(exc)))
            break
        held[(engine.info.label, name)] = vector
        save_vector(resources.store(), vector, session_panel.session_for_saving())
    bar.empty()


def _start_answers(engine: Engine, names: list[str], how: Extraction) -> None:
    """Response-average: the answers every trait needs, as a job for the one runner."""
    defs = traits()
    settings = {"model": engine.info.label, "max_new_tokens": how.max_new_tokens,
                "judge": how.judge, "endpoint": list(how.endpoint),
                "traits": {name: defs[name].to_json() for name in names}}
    runs.start_job(ANSWERS_KEY, ANSWERS_KIND, ", ".join(names), settings,
                   lambda: [item for name in names for item in answer_items(defs[name])])


def _answers_run(engine: Engine, held: dict) -> None:
    """The response-average answers' run: Stop keeps every answer, Resume goes on.

    Once all answers are in, the vectors are built from them (judge verdicts and residual
    passes) and saved.
    """
    job = runs.shown_job(ANSWERS_KEY, ANSWERS_KIND)
    if job is None or job.settings.get("built"):
        return
    store, kept = resources.store(), job.settings
    defs = {name: parse_trait(name, text) for name, text in kept["traits"].items()}
    st.caption(f"Response-average answers for {plain(job.label)} "
               f"({kept['max_new_tokens']} tokens at most each):")
    runs.drive(ANSWERS_KEY, job.id, JobItems(store, job.id, to_json=lambda found: found),
               answer_work(engine, defs, kept["max_new_tokens"]), unit="answers",
               chunk=GENERATION_BATCH, can_run=kept["model"] == engine.info.label,
               retry_failed=lambda: reset_failed(store, job.id),
               failures=runs.job_failures(job.id, "trait"))
    job = load_job(store, job.id)
    if job.pending or job.failed or kept["model"] != engine.info.label:
        return
    _build_vectors(engine, job, defs, held)


def _build_vectors(engine: Engine, job, defs: dict[str, Trait], held: dict) -> None:
    """Every trait's vector from the job's answers, saved; the job is marked built."""
    store, kept = resources.store(), job.settings
    answers: dict[str, dict] = {name: {} for name in defs}
    for record in item_records(store, job.id):
        item = record.item
        answers[item["trait"]][(item["q"], item["p"], item["side"])] = record.result
    how = Extraction("response_average", kept["max_new_tokens"], kept["judge"],
                     tuple(kept["endpoint"]))
    bar = st.progress(0.0, text="Building the vectors from the answers…")
    problems = []
    for k, (name, trait) in enumerate(defs.items()):
        done, total = 0, finishing_steps(trait, how.judge != "none")

        def tick(n: int, k=k, name=name, total=total) -> None:
            nonlocal done
            done += n
            bar.progress((k + min(done / total, 1.0)) / len(defs),
                         text=f"{plain(name)}: {done}/{total} verdicts and passes · trait "
                              f"{k + 1} of {len(defs)}")
        try:
            vector = vector_from_answers(engine, trait, answers[name], how.max_new_tokens,
                                         _judge(engine, how, trait), tick)
        except PerplexError as exc:
            problems.append(f"{name}: {exc}")
            continue
        held[(engine.info.label, name)] = vector
        save_vector(store, vector, job.session_id)
        st.caption(f"{plain(name)}: {vector.meta['pairs_kept']} of "
                   f"{vector.meta['pairs_in_all']} pairs kept"
                   + (" by the judge." if vector.meta["judge"] else "."))
    bar.empty()
    update_job_settings(store, job.id, {**kept, "built": True, "problems": problems})
    for problem in problems:
        st.error(plain(problem))


def _import_pt(engine: Engine, chosen: list[str], held: dict) -> None:
    with st.expander("Import a persona_vectors .pt vector"):
        trait = st.selectbox("For the trait", chosen or ["(choose traits first)"],
                             key=f"{PREFIX}.pt_trait")
        uploaded = uploaded_file("Vector file (.pt, a [layers + 1, hidden] tensor)",
                                 type=["pt"], key=f"{PREFIX}.pt_file")
        if uploaded is not None and chosen and st.button(
                "Import", key=f"{PREFIX}.pt_go", disabled=session_panel.read_only()):
            n_blocks = engine.info.n_layers
            try:
                vector = import_pt(uploaded.getvalue(), trait, engine.info.label,
                                   n_blocks, engine.info.hidden_size)
            except PerplexError as exc:
                st.error(plain(str(exc)))
                return
            held[(engine.info.label, trait)] = vector
            save_vector(resources.store(), vector, session_panel.session_for_saving())
            st.success(f"Imported {plain(trait)}: layer {vector.default_layer} (largest norm) by "
                       f"default. Layers 0 to {n_blocks - 1} are used as they are; "
                       f"layer {n_blocks} was read after the final norm by "
                       "persona_vectors, so it is not used here.")


def monitors(vectors: dict[str, TraitVector]) -> list[Monitor]:
    """Each ready trait at its chosen layer."""
    layers = st.session_state.get(LAYERS_KEY, {})
    return [Monitor(v, layers.get(name, v.default_layer)) for name, v in vectors.items()]


def generate_section(engine: Engine, found: list[Monitor], messages: tuple[Message, ...],
                     max_new: int) -> None:
    """Generate with every token's trait scores streamed beside it."""
    line = st.empty()

    def progress(n: int, token: int, scores: np.ndarray) -> None:
        if n % 4 == 1:
            named = " · ".join(f"{m.vector.trait} {s:+.2f}" for m, s in zip(found, scores))
            line.caption(f"{n} tokens · last token's scores: {plain(named)}")

    try:
        run = monitor_generate(engine, messages, found, DecodeParams(max_new_tokens=max_new),
                               progress=progress)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    line.empty()
    st.session_state[RUN_KEY] = run
    save_trait_run(resources.store(), _titled(run, "Persona traits: monitored answer"),
                   "monitored", session_panel.session_for_saving())


def _titled(run: MonitoredRun, title: str) -> MonitoredRun:
    return replace(run, generation=replace(run.generation, title=title))


def saved_section() -> None:
    """Reopen a monitored answer, or a baseline vs steered pair, saved in this session."""
    sid = session_panel.current_session_id()
    saved = list_trait_runs(resources.store(), sid) if sid else []
    if not saved:
        return
    with st.expander(f"Saved in this session ({len(saved)} monitored answers)"):
        names = {"monitored": "monitored", "baseline": "baseline (of a pair)",
                 "steered": "steered (of a pair)", "imported": "imported file"}
        pick = st.selectbox("Answer", saved, key=f"{PREFIX}.saved_pick",
                            format_func=lambda r: f"{r.created_at:%H:%M:%S} · {names[r.kind]} · "
                                                  f"{', '.join(r.traits)} · {r.tokens} tokens · "
                                                  f"{r.prompt[:60]}")
        if st.button("Open", key=f"{PREFIX}.saved_open"):
            _open_saved(pick, saved)


def _open_saved(pick: TraitRunSummary, saved: list[TraitRunSummary]) -> None:
    store = resources.store()
    try:
        if pick.kind in ("baseline", "steered"):
            pair = {r.kind: load_trait_run(store, r.id).run for r in saved
                    if r.pair_id == pick.pair_id}
            st.session_state[PAIR_KEY] = (pair["baseline"], pair["steered"])
            st.session_state[f"{PREFIX}.steer_trait"] = pair["steered"].traits[0]
        elif pick.kind == "monitored":
            st.session_state[RUN_KEY] = load_trait_run(store, pick.id).run
        else:
            st.session_state[IMPORTED_KEY] = [load_trait_run(store, pick.id).record]
    except (PerplexError, KeyError) as exc:
        st.error(plain(f"That answer could not be opened: {exc}"))


def import_section() -> None:
    """Show a per-token monitor JSON file (no model needed) in the same views; keep it."""
    with st.expander("Open per-token trait-monitor JSON (prompt, response, tokens, "
                     "trait_scores)"):
        uploaded = uploaded_file("Monitor file (.json)", type=["json"],
                                 key=f"{PREFIX}.monitor_file")
        if uploaded is not None and st.session_state.get(f"{PREFIX}.monitor_seen") != \
                uploaded.file_id:
            st.session_state[f"{PREFIX}.monitor_seen"] = uploaded.file_id
            try:
                st.session_state[IMPORTED_KEY] = parse_monitoring(uploaded.getvalue())
            except PerplexError as exc:
                st.session_state.pop(IMPORTED_KEY, None)
                st.error(plain(str(exc)))
        records = st.session_state.get(IMPORTED_KEY)
        if uploaded is not None and records and st.button(
                f"Keep {len(records)} answer(s) in this session", key=f"{PREFIX}.monitor_keep",
                disabled=session_panel.read_only()):
            save_imported(resources.store(), records, session_panel.session_for_saving())
            st.success(f"Kept {len(records)} monitored answer(s) in the database.")
    records = st.session_state.get(IMPORTED_KEY)
    if not records:
        return
    st.subheader("Imported monitor data")
    pick = st.selectbox("Answer", range(len(records)),
                        format_func=lambda i: f"{i + 1}: {records[i].prompt[:80]}",
                        key=f"{PREFIX}.monitor_pick")
    record = records[min(pick, len(records) - 1)]
    st.caption(f"Prompt: {plain(record.prompt[:300])}")
    steps = tuple(TokenStep(position=i, token_id=None, text=t, role=TokenRole.RESPONSE,
                            message_index=1) for i, t in enumerate(record.tokens))
    monitor_views(record.traits, None, record.scores, steps, f"{PREFIX}.imported")
    monitor_exports(list(records), [str(i + 1) for i in range(len(records))],
                    "perplex-traits-imported",
                    {"lines": plots.trait_lines(record.traits, record.scores, record.tokens)},
                    f"{PREFIX}.imported.{pick}.{len(records)}", "Export the imported answers",
                    {"source": "imported monitor file"})


def references(run: MonitoredRun) -> tuple[tuple[float, float] | None, ...]:
    """Per trait of `run`: (baseline, ‖v‖) of its vector at its layer, where this tab has it.

    The baseline is the negative examples' mean projection from extraction; imported vectors
    and vectors not loaded here have none (None).
    """
    held = st.session_state.get(VECTORS_KEY, {})
    out = []
    for trait, layer in zip(run.traits, run.trait_layers):
        vector = held.get((run.generation.model_label, trait))
        baseline = vector.baseline(layer) if vector is not None else None
        out.append(None if baseline is None else (baseline, vector.norms[layer]))
    return tuple(out)


def monitored_section(run: MonitoredRun, key: str) -> None:
    """The monitored answer on screen, with its exports."""
    monitor_views(run.traits, run.trait_layers, run.scores, run.generation.steps[run.answer_start:],
                  key, references(run))
    record = run.record()
    monitor_exports([record], [run.generation.id], f"perplex-traits-{run.generation.id}",
                    {"lines": plots.trait_lines(run.traits, run.scores, record.tokens)},
                    f"{key}.{run.generation.id}", about={
                        **provenance(run.generation),
                        "trait_layers": json.dumps(dict(zip(run.traits, run.trait_layers))),
                        "steering": json.dumps(list(run.steering))})


def monitor_exports(records: list[MonitoringRecord], labels: list[str], name: str,
                    figures: dict, key: str, title: str = "Export this answer",
                    about: dict[str, str] | None = None) -> None:
    """The answers' per-token scores as monitor JSON, CSV and Parquet, and their figures.

    `key` must change with what is shown (include an id), so a drawn figure is never stale.
    `about` (model, system prompt, layers, steering) becomes columns of the CSV and Parquet.
    """
    with st.expander(plain(title)):
        frame = with_provenance(monitoring_frame(records, labels), about or {})
        cols = st.columns(3)
        download(cols[0], "Per-token monitor JSON",
                 json.dumps([r.to_json() for r in records], indent=1),
                 file_name=f"{name}.json", mime="application/json", key=f"{key}.json")
        download(cols[1], "Per-token CSV", frame_csv(frame), file_name=f"{name}.csv",
                 mime="text/csv", key=f"{key}.csv")
        download(cols[2], "Per-token Parquet", lambda: monitoring_parquet(frame),
                 file_name=f"{name}.parquet", key=f"{key}.parquet")
        for fig_name, fig in figures.items():
            figure_downloads(fig, f"{name}-{fig_name}", f"{key}.fig.{fig_name}",
                             f"The {fig_name} figure", caption_line(
                                 f"prompt “{records[0].prompt[:80]}”" if records else "",
                                 f"traits {', '.join(records[0].traits)}" if records else "",
                                 name))


def _point_to_token(key: str) -> None:
    """A clicked point of the line chart moves the token slider to it (before the rerun)."""
    picked = st.session_state.get(f"{key}.lines")
    points = picked.get("selection", {}).get("points", []) if picked else []
    if points:
        st.session_state[f"{key}.token"] = int(points[0]["x"])


def monitor_views(traits: tuple[str, ...], layers: tuple[int, ...] | None, scores: np.ndarray,
                  steps, key: str,
                  refs: tuple[tuple[float, float] | None, ...] | None = None) -> None:
    """Slider + bars, lines, stats grid and the token view coloured by one trait.

    `refs` gives each trait's (baseline, ‖v‖) where known: colours are read against it.
    """
    refs = refs or (None,) * len(traits)
    texts = [s.text for s in steps]
    if not texts or not traits:
        st.caption("No answer tokens, or no trait monitored.")
        return
    index = st.slider("Token", 0, len(texts) - 1, 0, key=f"{key}.token")
    cols = st.columns(2)
    cols[0].plotly_chart(plots.token_bars(traits, scores, index, texts[index]),
                         key=f"{key}.bars")
    cols[1].plotly_chart(plots.trait_lines(traits, scores, texts, index), key=f"{key}.lines",
                         on_select=lambda: _point_to_token(key), selection_mode="points")
    grid = pd.DataFrame([{"trait": t, "layer": str(layers[i]) if layers else "(imported)",
                          "min": scores[i].min(), "max": scores[i].max(),
                          "mean": scores[i].mean(),
                          "baseline": refs[i][0] if refs[i] else None,
                          "peaks at": f"#{int(scores[i].argmax())} "
                                      f"“{visible_token(texts[int(scores[i].argmax())])}”"}
                         for i, t in enumerate(traits)])
    st.dataframe(grid, hide_index=True, width="stretch")
    coloured_by = st.selectbox("Colour the answer by", traits, key=f"{key}.colour")
    t = traits.index(coloured_by)
    lines = tuple(tuple(f"{name}: {scores[i, j]:+.3f}" for i, name in enumerate(traits))
                  for j in range(len(texts)))
    overlay = Overlay(plots.score_colours(scores[t].tolist(), refs[t]), lines,
                      label="the model (temperature 1)")
    token_view(steps, key=f"{key}-answer", confident=0.7, uncertain=0.3, highlight=index,
               overlay=overlay, inert=True)
    st.caption(colour_caption(coloured_by, refs[t]) + " Hover: every trait.")


def colour_caption(trait: str, ref: tuple[float, float] | None) -> str:
    """How the answer's colours read, with the baseline they are read against."""
    if ref is None:
        return (f"Red: the token's residual projects towards {plain(trait)} (h · v / ‖v‖ > 0), "
                "blue: away; full colour at the answer's largest |score|. This vector has no "
                "baseline (imported, or not loaded here), so colours are relative to 0, which "
                "need not be neutral.")
    baseline, span = ref
    return (f"Colours are read against {plain(trait)}'s baseline {baseline:+.2f}, the mean "
            f"score of its negative examples at extraction: red above it, blue below, full red at "
            f"{baseline + span:+.2f} (the positive examples' mean, baseline + ‖v‖).")


def steering_section(engine: Engine, found: list[Monitor], messages: tuple[Message, ...],
                     max_new: int) -> None:
    """Steering controls: one or several traits, each with its coefficient and layer."""
    st.subheader("Steering: baseline vs steered")
    names = [m.vector.trait for m in found]
    cols = st.columns([3, 1])
    steer = cols[0].multiselect("Steer along (one or several traits at once)", names,
                                default=names[:1], key=f"{PREFIX}.steer_traits")
    positions = cols[1].selectbox("At positions", ["response", "prompt", "all"],
                                  key=f"{PREFIX}.positions")
    if not steer:
        st.caption("Choose a trait to steer along.")
        return
    chosen = []
    for trait in steer:
        monitor = found[names.index(trait)]
        cols = st.columns([1, 2, 2])
        cols[0].markdown(f"**{plain(trait)}**")
        coefficient = float(cols[1].number_input(
            f"c for {plain(trait)} (adds c · v)", -20.0, 20.0, 2.0, 0.5,
            key=f"{PREFIX}.coefficient.{trait}",
            help="v is the trait's vector at the layer, unnormalised (persona_vectors' "
                 "semantics)"))
        layer = int(cols[2].number_input(f"Layer for {plain(trait)}", 1, engine.info.n_layers,
                                         max(1, monitor.layer),
                                         key=f"{PREFIX}.steer_layer.{trait}"))
        try:
            row = monitor.vector.row(layer)
        except PerplexError as exc:
            st.error(plain(str(exc)))
            return
        chosen.append(Steering(layer, torch.from_numpy(row).float(), coefficient, positions,
                               name=trait))
    if st.button("Generate baseline and steered", key=f"{PREFIX}.steer_go",
                 disabled=session_panel.read_only()):
        params = DecodeParams(max_new_tokens=max_new)
        try:
            with st.spinner("Baseline, then steered…"):
                base = monitor_generate(engine, messages, found, params)
                steered = monitor_generate(engine, messages, found, params, steering=chosen)
        except PerplexError as exc:
            st.error(plain(str(exc)))
            return
        st.session_state[PAIR_KEY] = (base, steered)
        store, sid, pair_id = resources.store(), session_panel.session_for_saving(), new_id()
        save_trait_run(store, _titled(base, "Persona traits: baseline"), "baseline", sid, pair_id)
        save_trait_run(store, _titled(steered, "Persona traits: steered"), "steered", sid,
                       pair_id)
    first = chosen[0]
    _sweep(engine, found, messages, max_new, first.name, first.layer, positions)


def steering_title(steered: MonitoredRun) -> str:
    """What was added, e.g. "+2 · evil at layer 16, −1 · refusal at layer 12 (response)"."""
    parts = [f"{s['coefficient']:+g} · {s.get('trait') or 'v'} at layer {s['layer']}"
             for s in steered.steering]
    where = steered.steering[0]["positions"] if steered.steering else ""
    return f"Steered: {', '.join(parts) or 'nothing'} ({where})"


def _injected_note(run: MonitoredRun, trait: str) -> str:
    """What the steered scores leave out, said beside them."""
    if not run.steering:
        return ""
    added = run.injected
    if added is None:
        return (" · raw: saved before steered scores left out the steering vector, so they "
                "include what it adds by itself")
    return (f" · steering alone adds {added[trait]:+.3f} to every steered token's projection "
            "(c · v·v̂ at the monitored layer); it is taken out here, so the scores show how "
            "the answer moved")


def pair_section() -> None:
    """Baseline and steered answers side by side, with where they part and the difference."""
    pair = st.session_state.get(PAIR_KEY)
    if pair is None:
        return
    base, steered = pair
    steered_traits = [s.get("trait") for s in steered.steering if s.get("trait") in base.traits]
    default = steered_traits[0] if steered_traits else base.traits[0]
    trait = st.selectbox("Scores of", base.traits, index=base.traits.index(default),
                         key=f"{PREFIX}.pair_trait.{steered.generation.id}")
    a, b = ([s.token_id for s in r.generation.steps if s.role is TokenRole.RESPONSE]
            for r in (base, steered))
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                 None if len(a) == len(b) else min(len(a), len(b)))
    st.markdown("**" + ("The steered answer is the same as the baseline." if first is None
                        else f"The answers part at token {first}.") + "**")
    left, right = st.columns(2)
    for column, run, title in ((left, base, "Baseline"), (right, steered, steering_title(steered))):
        with column:
            st.caption(plain(title))
            t = run.traits.index(trait)
            steps = run.generation.steps[run.answer_start:]
            token_view(steps, key=f"{PREFIX}-{title[:8]}", confident=0.7, uncertain=0.3,
                       overlay=Overlay(plots.score_colours(run.scores[t].tolist(),
                                                           references(run)[t])),
                       highlight=first if first is not None and first < len(steps) else None,
                       inert=True)
            st.caption(f"mean {plain(trait)} score {run.scores[t].mean():+.3f}"
                       + _injected_note(run, trait))
    t = base.traits.index(trait)
    st.caption(colour_caption(trait, references(base)[t]))
    difference = plots.score_difference(trait, base.scores[t], steered.scores[t], first)
    st.plotly_chart(difference, key=f"{PREFIX}.difference")
    ids = [base.generation.id, steered.generation.id]
    monitor_exports([base.record(), steered.record()], ["baseline", "steered"],
                    f"perplex-traits-pair-{ids[1]}", {f"{trait}-difference": difference},
                    f"{PREFIX}.pair.{ids[1]}.{trait}", "Export both answers", {
                        **provenance(base.generation), "baseline_steering": "[]",
                        "steering": json.dumps(list(steered.steering))})


def _sweep(engine: Engine, found: list[Monitor], messages: tuple[Message, ...],
           max_new: int, trait: str, layer: int, positions: str) -> None:
    with st.expander("Coefficient sweep"):
        cols = st.columns(3)
        low = float(cols[0].number_input("From c", -20.0, 20.0, -2.0, 0.5,
                                         key=f"{PREFIX}.sweep_low"))
        high = float(cols[1].number_input("To c", -20.0, 20.0, 2.0, 0.5,
                                          key=f"{PREFIX}.sweep_high"))
        steps = int(cols[2].number_input("Points", 2, MAX_POINTS, 5, key=f"{PREFIX}.sweep_n"))
        if st.button("Run the sweep", key=f"{PREFIX}.sweep_go",
                     disabled=session_panel.read_only() or high <= low):
            bar = st.progress(0.0, text="Sweeping…")
            try:
                points = coefficient_sweep(
                    engine, messages, found, trait, layer, np.linspace(low, high, steps),
                    positions, DecodeParams(max_new_tokens=max_new),
                    lambda done, total: bar.progress(done / total,
                                                     text=f"{done} of {total} coefficients"))
            except PerplexError as exc:
                st.error(plain(str(exc)))
                return
            bar.empty()
            st.session_state[SWEEP_KEY] = (trait, points)
        shown = st.session_state.get(SWEEP_KEY)
        if shown is None:
            return
        swept, points = shown
        st.plotly_chart(plots.sweep_figure(swept, [p.coefficient for p in points],
                                           [p.mean_score for p in points]),
                        key=f"{PREFIX}.sweep_chart")
        st.dataframe(pd.DataFrame([{"c": p.coefficient, f"mean {swept}": p.mean_score,
                                    "parts from c = 0 at": p.first_difference,
                                    "answer": p.answer[:200]} for p in points]),
                     hide_index=True, width="stretch")
