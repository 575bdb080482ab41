"""The Comparison page's sections: two conditions, both answers, where and how they diverge."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st

from perplex.core.comparison import UNLIKELY, CrossScore, PairRun, answer_steps
from perplex.core.errors import PerplexError
from perplex.core.plots import caption_line, short_prob, visible_token
from perplex.core.records import DecodeParams, Generation, TokenRole, TokenStep
from perplex.modes.comparison import plots
from perplex.modes.comparison.cross import Side
from perplex.modes.comparison.dataset import compare_prompt, divergent_tokens, prompt_row
from perplex.modes.comparison.drift import drift
from perplex.modes.comparison.pair import divergence_summary, finish_pair, pair_stats, top_divergent
from perplex.modes.comparison.pairing import check_pair
from perplex.modes.runner import Finished, JobItems
from perplex.ui.components import runs
from perplex.ui.components.answer_pair import answers_side_by_side
from perplex.ui.components.export_panel import download, figure_downloads
from perplex.ui.components.live import LiveGeneration, kept
from perplex.ui.components.prompt_lists import prompt_list_form
from perplex.ui.components.token_view import Overlay, token_view
from perplex.ui.shell import page_state, resources, session_panel
from perplex.ui.shell.conditioning import system_prompt_control
from perplex.ui.shell.model_choice import LOCAL_CHOICES, local_engine, memory_line, source_input
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import count, plain
from perplex.workspace.comparison_store import list_comparisons, load_comparison, save_comparison
from perplex.workspace.exports import frame_csv, provenance, with_provenance
from perplex.workspace.generation_rows import params_from_dict, params_to_json
from perplex.workspace.jobs import reset_failed

PREFIX = "comparison"
MANY_KEY, MANY_KIND = f"{PREFIX}.many_run", "comparison"  # the list of prompts (ui.runs)
RUN_KEY = f"{PREFIX}.run"  # Shown: the PairRun on screen, its id and its conditions
PICKED_KEY = f"{PREFIX}.picked"  # the divergence view's highlighted token index
REVEAL_KEY = f"{PREFIX}.reveal"
MODEL_CHOICES = {**LOCAL_CHOICES,
                 "endpoint": "An OpenAI-compatible endpoint (top-k only)…"}
APPROXIMATE_KEY = f"{PREFIX}.approximate"
TERSE_SYSTEM = "Answer in as few words as possible."  # condition B's system prompt at first
TOP_N = 10


@dataclass(frozen=True)
class Shown:
    """The comparison on screen."""

    comparison_id: str
    run: PairRun
    conditions: dict


def condition_section(name: str, default: str, system: str | None = None
                      ) -> tuple[Side, dict] | None:
    """One side's model and system prompt; None while it cannot be loaded.

    `system`, when given, is the side's system prompt until the researcher changes it.
    """
    if system is not None:
        st.session_state.setdefault(f"{PREFIX}.{name}.system_choice", "custom")
        st.session_state.setdefault(f"{PREFIX}.{name}.system_text", system)
    st.markdown(f"**Condition {name}**")
    choice = st.selectbox(f"Model {name}", list(MODEL_CHOICES), format_func=MODEL_CHOICES.get,
                          index=list(MODEL_CHOICES).index(default), key=f"{PREFIX}.{name}.model")
    if choice == "endpoint":
        return _endpoint_condition(name)
    source = ""
    if choice == "other":
        source = source_input(f"Model {name}", f"{PREFIX}.{name}.source")
        if source is None:
            return None
    try:
        engine = local_engine(choice, source)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return None
    memory_line(engine)
    system = system_prompt_control(engine, f"{PREFIX}.{name}")
    prompt = system[0].content if system else None
    condition = {"model": engine.info.label, "spec": engine.info.spec, "system": prompt}
    return Side(name, engine, prompt), condition


def _endpoint_condition(name: str) -> tuple[Side, dict] | None:
    """An OpenAI-compatible endpoint as a side; its key stays in this session's memory."""
    from perplex.engine.registry import endpoint_engine

    base_url = st.text_input(f"Endpoint {name}: base URL (…/v1)",
                             key=f"{PREFIX}.{name}.base_url").strip()
    model = st.text_input(f"Endpoint {name}: model name", key=f"{PREFIX}.{name}.endpoint_model")
    key = st.text_input(f"Endpoint {name}: API key (kept in this browser session only)",
                        type="password", key=f"{PREFIX}.{name}.api_key")
    if not base_url or not model.strip():
        st.caption("Give the endpoint's base URL and model name.")
        return None
    try:
        engine = endpoint_engine(base_url, model.strip(), key)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return None
    system = st.text_area(f"System prompt {name} (empty: none is sent; the server's "
                          "template decides)", key=f"{PREFIX}.{name}.endpoint_system")
    st.caption(f"{plain(engine.info.label)}: only its top-k per token, no given text scored "
               "on most servers (vLLM can); KL and JS with it are lower bounds.")
    prompt = system or None
    condition = {"model": engine.info.label, "spec": json.dumps({"endpoint": base_url,
                                                                  "model": model.strip()}),
                 "system": prompt}
    return Side(name, engine, prompt), condition


def memory_caption() -> None:
    """What the comparison's extra models hold, against the budget."""
    registry = resources.model_registry()
    budget = "no budget set" if registry.budget is None else \
        f"budget {registry.budget / 2**30:.2f} GiB (PERPLEX_MODEL_MEMORY)"
    st.caption(f"Models loaded for comparisons: {registry.used / 2**20:,.0f} MiB · {budget}")


def pair_notes(a: Side, b: Side) -> bool | None:
    """Whether the pair can be compared, and how.

    True: token by token; False: approximately (the box is ticked); None: not at all (a
    message says why).
    """
    for side in (a, b):
        if not side.has_tokens:
            st.info(f"{side.name}'s tokenizer is out of sight (an API): tokens are matched "
                    "by their text, and KL and JS are lower bounds from its top-k.")
    if not (a.has_tokens and b.has_tokens):
        return True
    try:
        notes = check_pair(a.engine.tokenizer_facts(), b.engine.tokenizer_facts(),
                           a.engine.info.label, b.engine.info.label)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        if st.checkbox("Approximate alignment: compare runs of characters (log-probability "
                       "sums only; every number labelled approximate)", key=APPROXIMATE_KEY):
            return False
        return None
    for note in notes:
        st.info(plain(note))
    return True


def generate_section(a: Side, b: Side, conditions: dict, prompt: str,
                     params: DecodeParams, approximate: bool = False) -> None:
    """Both sides answer, streamed side by side; then the answers are cross-scored and saved."""
    columns = st.columns(2)
    generations: dict[str, Generation] = {}
    th = thresholds()
    for side, column in zip((a, b), columns):
        with column:
            st.caption(f"{side.name}: {plain(side.engine.info.label)}")
            view = LiveGeneration(key=f"{PREFIX}-live-{side.name}", confident=th.confident,
                                  uncertain=th.uncertain, expected=params.max_new_tokens)
            try:
                run = side.engine.generate(side.messages(prompt), params)
                shown = []
                with kept(run, _keeping_uncompared(generations, side.name)):
                    for step in run:
                        if step.role is TokenRole.RESPONSE:
                            shown.append(step)
                            view.update(shown)
                generations[side.name] = run.generation()
                view.done()
            except PerplexError as exc:
                st.error(f"{side.name} failed: {plain(str(exc))}")
    if len(generations) < 2:
        _keep_the_answer_that_came(generations)
        return
    try:
        with st.spinner("Scoring each answer under the other model…"):
            run = finish_pair(a, b, prompt, generations["A"], generations["B"],
                              approximate=approximate)
    except PerplexError as exc:
        st.error(f"Cross-scoring failed: {plain(str(exc))}")
        _keep_the_answer_that_came(generations)
        return
    try:
        saved = save_comparison(resources.store(), run, conditions,
                                session_panel.session_for_saving())
    except PerplexError as exc:
        st.error(f"The comparison could not be saved: {plain(str(exc))}")
        return
    show(saved, run, conditions)
    st.rerun()


def _keeping_uncompared(generations: dict[str, Generation], stopped: str):
    """How a Stop during `stopped`'s answer keeps it and the answers already made."""
    done = dict(generations)  # the sides finished before this one

    def keep(partial: Generation) -> None:
        for name, gen in {**done, stopped: partial}.items():
            how = "stopped" if name == stopped else "complete"
            resources.store().save_generation(replace(
                gen, session_id=session_panel.session_for_saving(),
                title=f"Comparison: {name}'s answer ({how}; not compared: the run was stopped)"))
    return keep


def _keep_the_answer_that_came(generations: dict[str, Generation]) -> None:
    """Save the side that answered (the other failed), so nothing done is lost."""
    for name, gen in generations.items():
        resources.store().save_generation(replace(
            gen, session_id=session_panel.session_for_saving(),
            title=f"Comparison: {name} only (the other side failed)"))
        st.info(f"{name}'s answer is saved in the session (Saved in the database).")


def show(comparison_id: str, run: PairRun, conditions: dict) -> None:
    """Put a comparison on screen (and in the session, for a reload)."""
    st.session_state[RUN_KEY] = Shown(comparison_id, run, conditions)
    st.session_state.pop(PICKED_KEY, None)
    session_panel.remember_shown(RUN_KEY, comparison_id)


def restore() -> None:
    """After a reload or on opening a session, put back the comparison the page showed."""
    session_panel.restore(RUN_KEY, lambda comparison_id: Shown(
        comparison_id, *load_comparison(resources.store(), comparison_id)))


def results_section() -> None:
    """The comparison on screen: summary, both answers, the divergence view and figures."""
    shown: Shown | None = st.session_state.get(RUN_KEY)
    if shown is None:
        return
    run, conditions = shown.run, shown.conditions
    label_a, label_b = conditions["A"]["model"], conditions["B"]["model"]
    st.subheader("Where they diverge")
    st.markdown(f"**{plain(divergence_summary(run))}**")
    for note in run.notes:
        st.info(plain(note))
    threshold = st.number_input("Flag tokens either model gives a probability below",
                                min_value=1e-9, max_value=1.0, value=UNLIKELY, format="%.0e",
                                key=f"{PREFIX}.threshold")
    _stats_table(run, threshold)
    drift_panel(run.crosses, label_a, label_b, f"{PREFIX}.drift")
    _answers_side_by_side(run, label_a, label_b)
    authors = [cross.author for cross in run.crosses]
    if not authors:
        return
    author = st.radio("Divergence along", authors, horizontal=True,
                      format_func=lambda s: f"{s}'s answer", key=f"{PREFIX}.author")
    cross = run.cross(author)
    picked = st.session_state.get(PICKED_KEY)
    divergence_view(cross, label_a, label_b, threshold, picked)
    _top_divergent(cross, threshold)
    figures = {"divergence": plots.kl_timeline(cross, threshold, picked)}
    if cross.approximate:
        st.caption("No entropy heatmap: across two tokenizers the tokens do not line up.")
    else:
        figures["entropy"] = plots.dual_entropy_heatmap(cross, label_a, label_b)
        st.plotly_chart(figures["entropy"], key=f"{PREFIX}.heatmap")
    st.plotly_chart(figures["divergence"], key=f"{PREFIX}.timeline")
    _lens_buttons(run, picked)
    _downloads(shown, figures)


def drift_panel(crosses, label_a: str, label_b: str, key: str) -> None:
    """Where the two engines' top-1 tokens part, by kind of token and by position."""
    found = drift(crosses)
    if not found.tokens:
        return
    st.caption(plain(found.sentence(label_a, label_b)))
    with st.expander("Drift between the two: where top-1 differs"):
        st.caption("A flip: the two put different tokens first (greedy decoding would part "
                   "there). KL is of A's distribution from B's at each answer token"
                   + (", a lower bound over the tokens both report (one side is an API)."
                      if found.bound else "."))
        cols = st.columns(2)
        cols[0].dataframe(pd.DataFrame(found.by_kind()), hide_index=True, key=f"{key}.kinds",
                          column_config={"mean KL": st.column_config.NumberColumn(
                              format="%.4f")})
        cols[1].dataframe(pd.DataFrame(found.by_position()), hide_index=True,
                          key=f"{key}.positions")


def _stats_table(run: PairRun, threshold: float) -> None:
    rows = []
    for cross in run.crosses:
        stats = pair_stats(cross, threshold)
        bound = " (≥, top-k bound)" if stats.bounds else ""
        unit = "runs (≈ approximate)" if cross.approximate else "tokens"
        rows.append({"answer": f"{cross.author}'s", unit: len(cross.tokens),
                     f"mean KL(A‖B){bound}": stats.mean_kl_ab,
                     f"mean KL(B‖A){bound}": stats.mean_kl_ba, f"mean JS{bound}": stats.mean_js,
                     f"flagged (p < {threshold:g})": stats.unlikely})
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.4f")
                                    for c in rows[0] if c.startswith("mean")})


def _answers_side_by_side(run: PairRun, label_a: str, label_b: str) -> None:
    answers = []
    for name, gen, label in (("A", run.generation_a, label_a), ("B", run.generation_b, label_b)):
        system = gen.messages[0].content if gen.messages[0].role == "system" else None
        caption = f"{name}: {plain(label)}" + (f" · system: “{plain(system[:60])}”"
                                                if system else "")
        answers.append((name, caption, answer_steps(gen)))
    answers_side_by_side(answers, run.first_divergence, f"{PREFIX}-answer")


def divergence_overlay(cross: CrossScore, label_a: str, label_b: str) -> Overlay:
    """Colours by log p_A − log p_B; tooltips with both models' numbers and top-3."""
    bound = "≥ " if cross.bounds else ""
    lines, second = [], []
    steps_b = cross.answer_steps("B") if not cross.approximate else ()
    for i, t in enumerate(cross.tokens):
        head = (f"p_A {short_prob(t.prob_a)} · p_B {short_prob(t.prob_b)} · "
                f"log p_A − log p_B = {t.log_ratio:+.3f}")
        if t.approximate:
            lines.append(("≈ approximate: a run of characters the two tokenizers split "
                          "differently; p is the product over its tokens", head))
            continue
        lines.append((head, f"KL(A‖B) {bound}{t.kl_ab:.4f} · KL(B‖A) {bound}{t.kl_ba:.4f} · "
                            f"JS {bound}{t.js:.4f} nats",
                      f"rank {t.rank_a} under A, {t.rank_b} under B"))
        second.append(tuple((alt.text, alt.prob, _is(alt, t)) for alt in steps_b[i].top[:3]))
    return Overlay(tuple(plots.divergence_colour(t.log_ratio) for t in cross.tokens),
                   tuple(lines), label=f"under A ({label_a})",
                   second_label=f"under B ({label_b})", second=tuple(second))


def _is(alt, t) -> bool:
    """Whether an alternative is the compared token (by id where both have one)."""
    if alt.token_id is not None and t.token_id is not None:
        return alt.token_id == t.token_id
    return alt.text == t.text


def view_steps(cross: CrossScore) -> tuple[TokenStep, ...]:
    """What the divergence view shows: the answer's records under A, or its runs."""
    if not cross.approximate:
        return cross.answer_steps("A")
    first = cross.answer_steps("A")[0]
    return tuple(TokenStep(position=first.position + t.index, token_id=None, text=t.text,
                           role=TokenRole.RESPONSE, message_index=first.message_index,
                           prob=t.prob_a, logprob=t.logprob_a) for t in cross.tokens)


def divergence_view(cross: CrossScore, label_a: str, label_b: str, threshold: float,
                    picked: int | None) -> None:
    """The answer's tokens coloured by divergence, flagged ones marked, hover for both."""
    flagged = {i: f"p < {threshold:g} under A or B" for i in cross.unlikely(threshold)}
    th = thresholds()
    event = token_view(view_steps(cross), key=f"{PREFIX}-divergence-{cross.author}",
                       confident=th.confident, uncertain=th.uncertain, highlight=picked,
                       alerts=flagged, overlay=divergence_overlay(cross, label_a, label_b),
                       reveal=st.session_state.get(REVEAL_KEY, 0))
    if event is not None and event.kind == "click":
        st.session_state[PICKED_KEY] = event.index
    approximate = (" ≈ Approximate alignment: each unit is a run of characters, p the "
                   "product over its tokens; KL and JS are undefined across two "
                   "vocabularies.") if cross.approximate else ""
    bounds = (" KL and JS are lower bounds (≥) from the top-k a side reported."
              if cross.bounds else "")
    st.caption(plots.divergence_legend(label_a, label_b) + f" {count(len(flagged), 'token')} "
               f"flagged (p < {threshold:g} under either model)." + bounds + approximate)


def _top_divergent(cross: CrossScore, threshold: float) -> None:
    by = st.selectbox("Top divergent tokens by", ["js", "kl_ab", "kl_ba", "log_ratio"],
                      format_func={"js": "JS", "kl_ab": "KL(A‖B)", "kl_ba": "KL(B‖A)",
                                   "log_ratio": "|log p_A − log p_B|"}.get,
                      key=f"{PREFIX}.top_by")
    top = top_divergent(cross, TOP_N, by)
    st.caption(f"The {len(top)} tokens of {cross.author}'s answer that diverge most; "
               "a button jumps to the token in the view above.")
    columns = st.columns(5)
    for i, t in enumerate(top):
        flag = " ⚑" if min(t.prob_a, t.prob_b) < threshold else ""
        columns[i % 5].button(
            f"#{t.index} “{visible_token(t.text)}” JS {t.js:.3f}{flag}",
            key=f"{PREFIX}.jump.{cross.author}.{t.index}", on_click=_jump, args=(t.index,),
            help=f"p_A {short_prob(t.prob_a)}, p_B {short_prob(t.prob_b)}")


def _jump(index: int) -> None:
    st.session_state[PICKED_KEY] = index
    st.session_state[REVEAL_KEY] = st.session_state.get(REVEAL_KEY, 0) + 1


def _lens_buttons(run: PairRun, picked: int | None) -> None:
    sidebar = resources.local_engine()
    label = sidebar.info.label if sidebar is not None else "the sidebar's model"
    columns = st.columns(2)
    for (name, gen), column in zip((("A", run.generation_a), ("B", run.generation_b)), columns):
        steps = answer_steps(gen)
        if any(s.token_id is None for s in steps):
            column.caption(f"{name}'s answer came from an API without token ids: the lens "
                           "cannot open it.")
            continue
        position = steps[picked].position if picked is not None and picked < len(steps) \
            else None
        if column.button(f"Open {name}'s answer in the Logit Lens", key=f"{PREFIX}.lens.{name}",
                         help=f"The lens runs on the sidebar's model ({label})."):
            page_state.open_in_lens(gen.id, position)


def _downloads(shown: Shown, figures: dict) -> None:
    with st.expander("Export"):
        frame = with_provenance(divergence_frame(shown.run), {
            **provenance(shown.run.generation_a, "a_"), **provenance(shown.run.generation_b, "b_"),
            "conditions": json.dumps(shown.conditions)})
        cols = st.columns(4)
        name = f"perplex-comparison-{shown.comparison_id}"
        download(cols[0], "Per-token CSV", frame_csv(frame), file_name=f"{name}.csv",
                 mime="text/csv", key=f"{PREFIX}.csv")
        download(cols[1], "Per-token Parquet", lambda: frame.to_parquet(index=False),
                 file_name=f"{name}.parquet", key=f"{PREFIX}.parquet")
        for fig_name, fig in figures.items():
            figure_downloads(fig, f"{name}-{fig_name}", f"{PREFIX}.fig.{fig_name}."
                             f"{shown.comparison_id}", f"The {fig_name} figure", caption_line(
                                 f"A: {shown.run.generation_a.model_label}",
                                 f"B: {shown.run.generation_b.model_label}",
                                 f"prompt “{shown.run.prompt[:80]}”",
                                 f"comparison {shown.comparison_id}"))


def divergence_frame(run: PairRun) -> pd.DataFrame:
    """Every compared token of both answers, one row each, as the store keeps them."""
    return pd.DataFrame([
        {"answer": cross.author, "index": t.index, "token_id": t.token_id, "text": t.text,
         "p_a": t.prob_a, "p_b": t.prob_b, "logprob_a": t.logprob_a, "logprob_b": t.logprob_b,
         "log_ratio": t.log_ratio, "kl_ab": t.kl_ab, "kl_ba": t.kl_ba, "js": t.js,
         "rank_a": t.rank_a, "rank_b": t.rank_b, "bound": t.bound,
         "approximate": t.approximate}
        for cross in run.crosses for t in cross.tokens])


def dataset_section(a: Side, b: Side, conditions: dict, params: DecodeParams,
                    approximate: bool = False) -> None:
    """The comparison over many prompts: per prompt in a table, the set's tokens, a histogram.

    The list is a job run by the one runner (`ui.runs`): Stop keeps every compared prompt,
    Resume compares the rest with the pair as set above, a reload shows the last list.
    """
    st.subheader("Many prompts")
    viewing_only = session_panel.read_only()
    listed = prompt_list_form(f"{PREFIX}.many", "Compare every prompt", disabled=viewing_only)
    store = resources.store()
    if listed is not None:
        runs.start_job(MANY_KEY, MANY_KIND, f"{a.engine.info.label} vs {b.engine.info.label}",
                       {**_pair(a, b), "params": json.loads(params_to_json(params)),
                        "approximate": approximate},
                       lambda: [{"prompt": p} for p in listed.prompts])
    job = runs.shown_job(MANY_KEY, MANY_KIND)
    if job is None:
        return

    kept = params_from_dict(job.settings["params"])  # Resume decodes as the list started

    def work(items):
        run = compare_prompt(a, b, items[0].item["prompt"], kept,
                             approximate=job.settings["approximate"])
        save_comparison(store, run, conditions, session_panel.session_for_saving(), job.id)
        return [Finished(None, sum(len(c.tokens) for c in run.crosses))]

    same_pair = {side: job.settings[side] for side in "AB"} == _pair(a, b)
    runs.drive(MANY_KEY, job.id, JobItems(store, job.id), work, unit="prompts",
               retry_failed=lambda: reset_failed(store, job.id),
               failures=runs.job_failures(job.id), can_run=same_pair)
    if not same_pair:
        st.caption(f"This list was compared as {plain(job.label)}; choose that pair above to "
                   "resume it.")
    _batch_results(job.id)


def _pair(a: Side, b: Side) -> dict:
    """What makes a pair the same pair: each side's model and system prompt."""
    return {side.name: {"model": side.engine.info.label, "system": side.system_prompt}
            for side in (a, b)}


def _batch_results(batch_id: str) -> None:
    store = resources.store()
    summaries = list_comparisons(store, batch_id=batch_id)
    if not summaries:
        st.caption("No prompt finished.")
        return
    runs = {s.id: load_comparison(store, s.id)[0] for s in summaries}
    rows = [prompt_row(runs[s.id], s.id) for s in reversed(summaries)]
    table = pd.DataFrame([{"prompt": r.prompt, "mean KL(A‖B)": r.mean_kl_ab,
                           "mean KL(B‖A)": r.mean_kl_ba, "mean JS": r.mean_js,
                           "first divergence": r.first_divergence, "flagged": r.unlikely}
                          for r in rows])
    picked = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun",
                          selection_mode="single-row", key=f"{PREFIX}.many_table.{batch_id}",
                          column_config={c: st.column_config.NumberColumn(format="%.4f")
                                         for c in table.columns if c.startswith("mean")})
    st.caption("Click a column header to sort; tick a row to open that pair above. "
               "KL and JS are over A's answer; flagged counts both answers.")
    if picked and picked.selection.rows:
        row = rows[picked.selection.rows[0]]
        if st.session_state.get(RUN_KEY) is None or \
                st.session_state[RUN_KEY].comparison_id != row.comparison_id:
            run, conditions = load_comparison(store, row.comparison_id)
            show(row.comparison_id, run, conditions)
            st.rerun()
    first = next(iter(runs.values()))
    drift_panel([c for run in runs.values() for c in run.crosses], first.generation_a.model_label,
                first.generation_b.model_label, f"{PREFIX}.many_drift.{batch_id}")
    tallies = divergent_tokens(list(runs.values()))
    if tallies:
        st.markdown("**Tokens flagged most often across the set**")
        st.dataframe(pd.DataFrame([{"token": visible_token(t.text), "times flagged": t.flagged,
                                    "prompts": t.prompts, "mean JS": t.mean_js}
                                   for t in tallies]), hide_index=True, width="stretch")
    st.plotly_chart(plots.first_divergence_histogram([r.first_divergence for r in rows]),
                    key=f"{PREFIX}.many_hist.{batch_id}")
