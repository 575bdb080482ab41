"""The Decoding page's sections: a method and its settings, the run, what it did, how fast."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from perplex.core.decoding import MethodRun
from perplex.core.errors import PerplexError
from perplex.core.plots import caption_line
from perplex.core.records import Message, TokenRole, TokenStep
from perplex.core.tokens import Detokenizer
from perplex.engine.protocol import Engine
from perplex.modes.decoding import plots
from perplex.modes.decoding.contrastive import MAX_NEW_TOKENS, ContrastiveParams
from perplex.modes.decoding.dola import DolaParams, premature_layers
from perplex.modes.decoding.run import DecodingResult, run_method
from perplex.modes.decoding.speculative import MAX_GAMMA, SpeculativeParams
from perplex.modes.decoding.stats import contrast_stats, contrast_summary, speculative_stats
from perplex.ui.components.export_panel import download, figure_downloads
from perplex.ui.components.live import LiveGeneration
from perplex.ui.components.token_view import token_view
from perplex.ui.shell import page_state, resources, session_panel
from perplex.ui.shell.model_choice import LOCAL_CHOICES, choose_local_model
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import plain
from perplex.ui.views.decoding_marks import contrast_overlay, legend, speculative_overlay
from perplex.workspace.decoding_store import StoredDecoding, load_decoding, save_decoding
from perplex.workspace.exports import frame_csv, provenance, with_provenance

PREFIX = "decoding"
SHOWN_KEY = f"{PREFIX}.shown"  # the StoredDecoding on screen
METHODS = {"speculative": "Speculative decoding", "contrastive": "Contrastive decoding",
           "dola": "DoLa"}
DRAFTS = {"early_exit": "Early exit (the target's first k blocks)",
          "prompt_lookup": "Prompt lookup (copy n-grams from the text)",
          "model": "A second model"}
SECOND_CHOICES = {k: v for k, v in LOCAL_CHOICES.items() if k != "sidebar"}
DEFAULT_PROMPT = ("Summarise this in one sentence: The Eiffel Tower is a wrought-iron lattice "
                  "tower in Paris, France. The Eiffel Tower was built for the 1889 World's "
                  "Fair, and the Eiffel Tower is the most visited paid monument in the world.")


@dataclass(frozen=True)
class Setup:
    """What the Run button runs: the method's parameters and its second model, if any."""

    params: ContrastiveParams | DolaParams | SpeculativeParams
    second: Engine | None = None


def method_section(engine: Engine) -> Setup | None:
    """The method and its settings; None (with a message) while they do not make a run."""
    method = st.segmented_control("Method", list(METHODS), format_func=METHODS.get,
                                  default="speculative", key=f"{PREFIX}.method") or "speculative"
    max_new = int(st.number_input("New tokens at most", 1, MAX_NEW_TOKENS, 48,
                                  key=f"{PREFIX}.max_new"))
    try:
        if method == "speculative":
            return _speculative(engine, max_new)
        if method == "contrastive":
            return _contrastive(engine, max_new)
        return Setup(_dola(engine, max_new))
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return None


def _speculative(engine: Engine, max_new: int) -> Setup | None:
    n = engine.info.n_layers
    cols = st.columns(4)
    draft = cols[0].selectbox("Draft", list(DRAFTS), format_func=DRAFTS.get,
                              key=f"{PREFIX}.draft")
    gamma = int(cols[1].number_input("γ (drafted tokens per round)", 1, MAX_GAMMA, 4,
                                     key=f"{PREFIX}.gamma"))
    schedule = cols[2].selectbox("γ schedule", ["constant", "heuristic"],
                                 help="heuristic: γ + 2 after a round that kept every draft, "
                                      "γ − 1 (at least 1) after one that did not",
                                 key=f"{PREFIX}.schedule")
    temperature = float(cols[3].number_input("Temperature (0: greedy)", 0.0, 10.0, 0.0, 0.1,
                                             key=f"{PREFIX}.temperature"))
    cols = st.columns(3)
    exit_layer, ngram, seed = max(1, 3 * n // 4), 3, 0
    if draft == "early_exit":
        exit_layer = int(cols[0].slider("Exit after block k", 1, n - 1, exit_layer,
                                        key=f"{PREFIX}.exit_layer",
                                        help="The draft runs the first k blocks, then the "
                                             "final norm and unembedding"))
    if draft == "prompt_lookup":
        ngram = int(cols[0].number_input("Longest n-gram matched", 1, 8, 3,
                                         key=f"{PREFIX}.ngram"))
    if temperature > 0:
        seed = int(cols[1].number_input("Seed", 0, 2**31 - 1, 0, key=f"{PREFIX}.seed"))
    params = SpeculativeParams(draft, gamma, schedule, temperature, seed, exit_layer, ngram,
                               max_new)
    second = None
    if draft == "model":
        second = choose_local_model("Draft model", f"{PREFIX}.draft_model", "int8",
                                    SECOND_CHOICES)
        if second is None:
            return None
    return Setup(params, second)


def _contrastive(engine: Engine, max_new: int) -> Setup | None:
    n = engine.info.n_layers
    cols = st.columns(4)
    amateur = cols[0].selectbox("Amateur", ["early_exit", "model"],
                                format_func={"early_exit": "Early exit of the expert",
                                             "model": "A second model"}.get,
                                key=f"{PREFIX}.amateur")
    alpha = float(cols[1].number_input("α (plausibility)", 0.0, 1.0, 0.1, 0.05, format="%.3f",
                                       key=f"{PREFIX}.alpha",
                                       help="V_head keeps tokens with p_exp ≥ α · max p_exp"))
    form = cols[2].selectbox("Score", ["li", "obrien"],
                             format_func={"li": "log p_exp − log p_ama (Li et al.)",
                                          "obrien": "(1+β)·log p_exp − β·log p_ama "
                                                    "(O'Brien & Lewis)"}.get,
                             key=f"{PREFIX}.form")
    tau = float(cols[3].number_input("Amateur temperature τ", 0.05, 10.0, 1.0, 0.1,
                                     key=f"{PREFIX}.tau"))
    beta, exit_layer, second = None, None, None
    cols = st.columns(3)
    if form == "obrien":
        beta = float(cols[0].number_input("β", 0.0, 10.0, 0.5, 0.1, key=f"{PREFIX}.beta"))
    if amateur == "early_exit":
        exit_layer = int(cols[1].slider("Amateur: the expert's first k blocks", 1, n - 1,
                                        max(1, n // 4), key=f"{PREFIX}.amateur_exit"))
    params = ContrastiveParams(alpha, beta, tau, max_new, exit_layer)
    if amateur == "model":
        second = choose_local_model("Amateur model", f"{PREFIX}.amateur_model", "int8",
                                    SECOND_CHOICES)
        if second is None:
            return None
    return Setup(params, second)


def _dola(engine: Engine, max_new: int) -> DolaParams:
    info = engine.info
    cols = st.columns(3)
    bucket = cols[0].selectbox("Premature layers", ["high", "low", "list"],
                               format_func={"high": "high (second half)",
                                            "low": "low (first half)",
                                            "list": "my list…"}.get, key=f"{PREFIX}.bucket")
    relative_top = float(cols[1].number_input("Relative top", 0.0, 1.0, 0.1, 0.05,
                                              key=f"{PREFIX}.relative_top",
                                              help="keep tokens with p ≥ this · max p"))
    penalty = float(cols[2].number_input("Repetition penalty (1: none)", 1.0, 10.0, 1.0, 0.1,
                                         key=f"{PREFIX}.penalty"))
    candidates: str | tuple[int, ...] = bucket
    if bucket == "list":
        text = st.text_input(f"Layer numbers, e.g. 4, 8, 12 (0 is the embedding; the model "
                             f"has {info.n_layers})", key=f"{PREFIX}.layers")
        candidates = _layer_list(text)
    params = DolaParams(candidates, relative_top, penalty, max_new)
    layers = premature_layers(candidates, info.n_layers, info.tied_embeddings)
    st.caption(f"Candidates: layers {', '.join(map(str, layers))} (every second one of the "
               "bucket; with tied embeddings the bucket starts at 2).")
    return params


def _layer_list(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise PerplexError("List the premature layers, e.g. 4, 8, 12.")
    bad = [p for p in parts if not p.lstrip("-").isdigit()]
    if bad:
        raise PerplexError(f"“{bad[0]}” is not a layer number: write whole numbers separated "
                           "by commas.")
    return tuple(int(p) for p in parts)


def run_section(engine: Engine, setup: Setup, messages: tuple[Message, ...],
                prompt: str) -> None:
    """Run the method and plain greedy on the prompt, streamed; save and show the result."""
    th = thresholds()
    detok = Detokenizer(engine.tokenizer)
    shown: list[TokenStep] = []
    st.caption("The method, streaming (probabilities come once it ends):")
    view = LiveGeneration(key=f"{PREFIX}-live", confident=th.confident, uncertain=th.uncertain,
                          expected=setup.params.max_new_tokens, keeps=False)

    def progress(n: int, token_id: int) -> None:
        shown.append(TokenStep(position=n - 1, token_id=token_id, text=detok.push(token_id),
                               role=TokenRole.RESPONSE, message_index=len(messages)))
        view.update(shown)

    note = st.empty()

    def greedy_progress(n: int, _: int) -> None:
        if n == 1 or n % 8 == 0:
            note.caption(f"Plain greedy decoding for comparison: {n} tokens…")

    try:
        result = run_method(engine, messages, setup.params, setup.second, progress,
                            greedy_progress)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    note.empty()
    view.done()
    try:
        run_id = save_result(prompt, result)
    except PerplexError as exc:
        st.error(f"The run could not be saved: {plain(str(exc))}")
        return
    show(load_decoding(resources.store(), run_id))
    st.rerun()


def save_result(prompt: str, result: DecodingResult, batch_id: str | None = None) -> str:
    """Save a result into the session being saved to; returns the run id."""
    return save_decoding(resources.store(), prompt, result.method, result.greedy,
                         result.method_generation, result.greedy_generation,
                         result.second_label, session_panel.session_for_saving(), batch_id)


def show(stored: StoredDecoding) -> None:
    """Put a saved run on screen (and in the session, for a reload)."""
    st.session_state[SHOWN_KEY] = stored
    session_panel.remember_shown(SHOWN_KEY, stored.id)


def restore() -> None:
    """After a reload or on opening a session, put back the run the page showed."""
    session_panel.restore(SHOWN_KEY, lambda run_id: load_decoding(resources.store(), run_id))


def _answer_steps(gen) -> tuple[TokenStep, ...]:
    last = len(gen.messages) - 1
    return tuple(s for s in gen.steps if s.role is TokenRole.RESPONSE and s.message_index == last)


def results_section() -> None:
    """The run on screen: the summary, both answers, the statistics and figures, exports."""
    stored: StoredDecoding | None = st.session_state.get(SHOWN_KEY)
    if stored is None:
        return
    run = stored.method
    st.subheader(f"{METHODS[run.method]}: what it did")
    st.markdown(f"**{plain(difference_summary(stored))}**")
    th = thresholds()
    method_steps = _answer_steps(stored.method_generation)
    greedy_steps = _answer_steps(stored.greedy_generation)
    first = _first(stored)
    overlay = speculative_overlay(run) if run.method == "speculative" else contrast_overlay(run)
    left, right = st.columns(2)
    marks = {first: "first difference from plain greedy"} if first is not None else None
    with left:
        st.caption(f"{METHODS[run.method]} · {plain(_describe(stored))}")
        event = token_view(method_steps, key=f"{PREFIX}-method-{stored.id}",
                           confident=th.confident, uncertain=th.uncertain,
                           alerts=marks if first is not None and first < len(method_steps)
                           else None, overlay=overlay)
        st.caption(legend(run))
    with right:
        st.caption(f"Plain greedy decoding · {plain(stored.method_generation.model_label)}")
        token_view(greedy_steps, key=f"{PREFIX}-greedy-{stored.id}", confident=th.confident,
                   uncertain=th.uncertain, highlight=first if first is not None
                   and first < len(greedy_steps) else None, inert=True)
        st.caption("Coloured by the target's probability (temperature 1).")
    _conditioning(stored)
    figures = _statistics(stored)
    if event is not None and event.kind == "open_lens":
        page_state.open_in_lens(stored.method_generation.id, method_steps[event.index].position)
    if st.button("Open the method's answer in the Logit Lens", key=f"{PREFIX}.lens"):
        page_state.open_in_lens(stored.method_generation.id, None)
    _downloads(stored, figures)


def _first(stored: StoredDecoding) -> int | None:
    a, b = stored.method.answer_ids, stored.greedy.answer_ids
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                None if len(a) == len(b) else min(len(a), len(b)))


def difference_summary(stored: StoredDecoding) -> str:
    """Where the method's answer first leaves plain greedy's, with both tokens."""
    first = _first(stored)
    method, greedy = _answer_steps(stored.method_generation), _answer_steps(
        stored.greedy_generation)
    if first is None:
        return f"The same {len(method)} tokens as plain greedy decoding."

    def named(steps, who):
        if first >= len(steps):
            return f"the end of {who}'s answer"
        return f"“{steps[first].text}” ({who}, p={steps[first].prob:.2g})"

    return (f"Leaves plain greedy at token {first}: {named(method, 'method')} vs "
            f"{named(greedy, 'greedy')}.")


def _describe(stored: StoredDecoding) -> str:
    p = stored.method.params
    if stored.method.method == "speculative":
        sampling = ("greedy" if not p["temperature"] else
                    f"temperature {p['temperature']}, seed {p['seed']}")
        return f"draft: {p['draft_label']} · γ {p['gamma']} ({p['schedule']}) · {sampling}"
    if stored.method.method == "contrastive":
        amateur = (stored.second_label or f"first {p['amateur_exit_layer']} blocks of the "
                   "expert")
        form = "Li et al." if p["beta"] is None else f"O'Brien & Lewis, β {p['beta']}"
        return f"amateur: {amateur} · α {p['alpha']} · τ {p['amateur_temperature']} · {form}"
    return (f"layers {', '.join(map(str, p['layers']))} · relative top {p['relative_top']} · "
            f"repetition penalty {p['repetition_penalty']}")


def _conditioning(stored: StoredDecoding) -> None:
    gen = stored.method_generation
    context = [s for s in gen.steps if not (s.role is TokenRole.RESPONSE
                                            and s.message_index == len(gen.messages) - 1)]
    with st.expander(f"Every token the models saw before the answer ({len(context)})"):
        th = thresholds()
        token_view(context, key=f"{PREFIX}-context-{stored.id}", confident=th.confident,
                   uncertain=th.uncertain, inert=True)
        st.caption("System prompt, chat template and prompt as encoded by the target's "
                   "tokenizer; both runs and the second model saw exactly these ids.")


def _statistics(stored: StoredDecoding) -> dict:
    run = stored.method
    result = _as_result(stored)
    if run.method == "speculative":
        stats = speculative_stats(result)
        cols = st.columns(5)
        cols[0].metric("Tokens/s (method)", f"{stats.tokens_per_second:.1f}")
        cols[1].metric("Tokens/s (target alone)", f"{stats.greedy_tokens_per_second:.1f}")
        cols[2].metric("Measured speedup", f"{stats.measured_speedup:.2f}×")
        cols[3].metric("Expected (Leviathan)", f"{stats.expected_speedup:.2f}×",
                       help=f"(1 − α^(γ+1)) / ((1 − α)(γc + 1)) with α {stats.acceptance:.2f}, "
                            f"mean γ {stats.mean_gamma:.2f}, c {stats.cost_ratio:.3f}")
        cols[4].metric("Acceptance α", f"{stats.acceptance:.2f}")
        st.caption(f"{stats.rounds} drafting rounds · mean accepted length "
                   f"{stats.mean_accepted:.2f} of mean γ {stats.mean_gamma:.2f} · cost ratio "
                   f"c = {stats.cost_ratio:.3f} (one draft step over one target step, "
                   f"measured in this run) · a verifying pass took {stats.verify_cost:.2f}× "
                   "a one-token pass (Leviathan's formula assumes 1×, as where decoding is "
                   "memory-bound on a GPU) · times are this machine's, in this process.")
        fig = plots.acceptance_by_position(stats)
        st.plotly_chart(fig, key=f"{PREFIX}.acceptance.{stored.id}")
        return {"acceptance": fig}
    stats = contrast_stats(result)
    cols = st.columns(4)
    cols[0].metric("Choices changed vs greedy", f"{stats.changed} of {stats.tokens}")
    cols[1].metric("Mean JS", f"{stats.mean_js:.4f} nats")
    cols[2].metric("Tokens/s (method)", f"{stats.tokens_per_second:.1f}")
    cols[3].metric("Tokens/s (greedy)", f"{stats.greedy_tokens_per_second:.1f}")
    st.caption(contrast_summary(stats))
    texts = [s.text for s in _answer_steps(stored.method_generation)]
    figures = {"probabilities": plots.contrast_timeline(run, texts)}
    if run.method == "dola":
        engine = resources.local_engine()
        n_layers = engine.info.n_layers if engine is not None else max(run.params["layers"]) + 1
        figures["layers"] = plots.layer_histogram(stats, n_layers)
    for name, fig in figures.items():
        st.plotly_chart(fig, key=f"{PREFIX}.{name}.{stored.id}")
    return figures


def _as_result(stored: StoredDecoding) -> DecodingResult:
    return DecodingResult(stored.method_generation.messages[:-1], None, stored.method,
                          stored.greedy, stored.method_generation, stored.greedy_generation,
                          stored.second_label)


def records_frame(run: MethodRun, texts: list[str]) -> pd.DataFrame:
    """One row per answer token with what the method recorded for it."""
    rows = []
    for i, token in enumerate(run.answer_ids):
        row = {"index": i, "token_id": token, "text": texts[i] if i < len(texts) else ""}
        if run.emitted:
            row.update(kind=run.emitted[i].kind, round=run.emitted[i].round)
        if run.contrast:
            c = run.contrast[i]
            row.update(greedy_id=c.greedy_id, changed=c.changed, p_a=c.p_a, p_b=c.p_b,
                       score=c.score, rank_a=c.rank_a, js=c.js, plausible=c.plausible,
                       constraint_changed=c.constraint_changed, layer=c.layer)
        rows.append(row)
    return pd.DataFrame(rows)


def drafts_frame(run: MethodRun) -> pd.DataFrame:
    """Every drafted token, the rejected and discarded ones included."""
    return pd.DataFrame([{"round": d.round, "slot": d.slot, "token_id": d.token_id,
                          "text": d.text, "q": d.q, "p": d.p, "accepted": d.accepted,
                          "verified": d.verified} for d in run.drafts])


def _downloads(stored: StoredDecoding, figures: dict) -> None:
    run = stored.method
    texts = [s.text for s in _answer_steps(stored.method_generation)]
    with st.expander("Export"):
        name = f"perplex-decoding-{stored.id}"
        about = {**provenance(stored.method_generation), "method": run.method,
                 "method_params": json.dumps(run.params)}
        frame = with_provenance(records_frame(run, texts), about)
        cols = st.columns(3)
        download(cols[0], "Per-token CSV", frame_csv(frame), file_name=f"{name}.csv",
                 mime="text/csv", key=f"{PREFIX}.csv")
        download(cols[1], "Per-token Parquet", lambda: frame.to_parquet(index=False),
                 file_name=f"{name}.parquet", key=f"{PREFIX}.parquet")
        if run.drafts:
            download(cols[2], "Every drafted token (CSV)",
                     frame_csv(with_provenance(drafts_frame(run), about)),
                     file_name=f"{name}-drafts.csv",
                     mime="text/csv", key=f"{PREFIX}.drafts_csv")
        for fig_name, fig in figures.items():
            figure_downloads(fig, f"{name}-{fig_name}", f"{PREFIX}.fig.{fig_name}.{stored.id}",
                             f"The {fig_name} figure", caption_line(
                                 stored.method_generation.model_label,
                                 f"{run.method} {json.dumps(run.params)}",
                                 f"prompt “{stored.prompt[:80]}”", f"decoding run {stored.id}"))
