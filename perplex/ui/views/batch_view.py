"""The Batch page's sections: a new batch, its run, flags and filters, the reader, exports."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import caption_line
from perplex.core.records import DecodeParams, Message
from perplex.core.repetition import REPETITION_N, REPETITION_RATE
from perplex.engine.protocol import Engine
from perplex.modes.batch import flags
from perplex.modes.batch.flags import FLAG_TITLES, FlagSettings, ItemFlags
from perplex.modes.batch.inputs import FORMATS, batch_kind, dataset_items, read_items
from perplex.modes.batch.plots import statistic_bins, statistic_histogram
from perplex.modes.batch.run import CHUNK, BatchItems, RunSettings, batch_work
from perplex.modes.calibration.answers import MATCH_RULES
from perplex.modes.calibration.datasets import sample_dataset
from perplex.modes.runner import paced
from perplex.ui.components import investigate, runs
from perplex.ui.components.export_panel import download, figure_downloads, rendered_figure
from perplex.ui.components.file_input import uploaded_file
from perplex.ui.components.transcript import show_transcript
from perplex.ui.shell import page_state, resources, session_panel
from perplex.ui.shell.model_choice import choose_local_model
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import count, plain
from perplex.workspace.batch_exports import (
    items_csv,
    items_jsonl,
    items_tokens_parquet,
    report_markdown,
    report_zip,
)
from perplex.workspace.batch_store import (
    NUMBER_OPS,
    STATISTICS,
    TEXT_COLUMNS,
    TEXT_OPS,
    BatchInput,
    BatchSummary,
    Condition,
    add_custom_flag,
    add_items,
    create_batch,
    custom_flags,
    filter_items,
    flag_counts,
    item_generation,
    list_batches,
    reset_failed,
)
from perplex.workspace.calibration_store import list_datasets, load_dataset
from perplex.workspace.generation_rows import params_from_dict
from perplex.workspace.token_sets import REFUSAL_SET, session_set_words

PREFIX = "batch"
CURRENT = page_state.current_key(PREFIX)  # the item's Generation open in the reader
BATCH_KEY = f"{PREFIX}.open"  # id of the batch on screen
RUN_KEY = f"{PREFIX}.run"  # the batch being run (`ui.runs`)
# Chunks sized to about this long (up to CHUNK items decoded together): the bar moves and
# a Stop is answered every few seconds even on a slow model.
CHUNK_SECONDS = 4.0
READER_KEY = f"{PREFIX}.reader"  # position in the filtered list
TABLE_PAGE = 100  # items in the table at once: 10,000 results never go to the browser whole
RANGE_KEY = f"{PREFIX}.range"  # (statistic, low, high) picked on the histogram
DEFAULT_PAGE = "pages/default.py"
FILTER_ROWS = 3
FILTER_COLUMNS = STATISTICS + ("answer_mismatch",) + TEXT_COLUMNS


@dataclass(frozen=True)
class Shown:
    """What the filter bar chose: its conditions, their words, the order."""

    conditions: tuple[Condition, ...]
    words: str
    order_by: str
    descending: bool


def new_batch_section(engine, system: tuple[Message, ...], params: DecodeParams) -> None:
    """Upload or paste items, choose the flags' parameters, create and start the batch."""
    with st.expander("New batch", expanded=not list_batches(resources.store(),
                                                             session_panel.current_session_id())
                     if session_panel.current_session_id() else True):
        upload = uploaded_file(
            "Prompts (.txt one a line, .csv with a prompt column, .jsonl with \"prompt\") or "
            "transcripts (.jsonl of chats or OpenAI responses with logprobs, .zip of JSON "
            "files)", type=[f.removeprefix(".") for f in FORMATS], key=f"{PREFIX}.upload")
        pasted = st.text_area("…or paste prompts, one a line", key=f"{PREFIX}.pasted",
                              height=120)
        datasets = {"": "(none)",
                    "sample:trivia": "sample: TriviaQA-style questions (Calibration's)",
                    "sample:mmlu": "sample: MMLU-style multiple choice (Calibration's)",
                    **{f"db:{i}": f"{title} ({n:,} questions, saved in Calibration)"
                       for i, title, n in list_datasets(resources.store())}}
        dataset = st.selectbox("…or a dataset already in the database", list(datasets),
                               format_func=datasets.get, key=f"{PREFIX}.dataset")
        name = st.text_input("Batch name", key=f"{PREFIX}.name",
                             placeholder="the file's or dataset's name, or “Pasted prompts”")
        name = name.strip() or (upload.name if upload is not None else "Pasted prompts"
                                if pasted.strip() else datasets[dataset])
        flag_settings = _flag_settings()
        rescore = st.checkbox("Score transcripts that carry their own probabilities again with "
                              "the model", key=f"{PREFIX}.rescore",
                              help="Off: an OpenAI response keeps the log-probabilities it "
                                   "came with; transcripts without them are scored by the "
                                   "model.")
        go = st.button("Create the batch and run it", type="primary", key=f"{PREFIX}.create",
                       disabled=session_panel.read_only() or engine is None
                       or (upload is None and not pasted.strip() and not dataset))
        words = session_set_words(resources.store(), session_panel.current_session_id())
        refusal = words[REFUSAL_SET] if hasattr(engine, "word_probs") else ()
        st.caption("Refusal at the first token: P(R-Set) of the session's R-Set words ("
                   + plain(", ".join(refusal)) + "; edit them on the Prefilling page)"
                   if refusal else "Refusal at the first token needs the full next-token "
                   "distribution: on this engine it is not computed.")
        if go:
            _create(engine, _entries(upload, pasted, dataset, system), name,
                    RunSettings(params, flag_settings, rescore, refusal_words=tuple(refusal)))


def _flag_settings() -> FlagSettings:
    st.markdown("**Flags** (each documented under *How the flags are computed*)")
    first, second, third = st.columns(4), st.columns(4), st.columns(4)
    values = dict(
        low_p=first[0].number_input("low confidence: p <", 0.0, 1.0, 0.1, 0.01,
                                    key=f"{PREFIX}.low_p"),
        spike_k=first[1].number_input("entropy spike: k (sd)", 0.0, 10.0, 2.0, 0.5,
                                      key=f"{PREFIX}.spike_k"),
        span_confidence=first[2].number_input("span: p <", 0.0, 1.0, 0.4, 0.05,
                                              key=f"{PREFIX}.span_p"),
        span_entropy=first[3].number_input("span: mean entropy >", 0.0, 20.0, 2.5, 0.5,
                                           key=f"{PREFIX}.span_h"),
        span_k=int(second[0].number_input("span: next k tokens", 1, 20, 3,
                                          key=f"{PREFIX}.span_k")),
        perplexity_z=second[1].number_input("perplexity outlier: z >", 0.0, 10.0, 2.0, 0.5,
                                            key=f"{PREFIX}.ppl_z"),
        refusal_p=second[2].number_input("refusal: P(R-Set) >", 0.0, 1.0, 0.5, 0.05,
                                         key=f"{PREFIX}.refusal_p"),
        divergence_kl=second[3].number_input("divergence: mean KL >", 0.0, 50.0, 0.5, 0.1,
                                             key=f"{PREFIX}.divergence_kl"),
        repetition_rate=third[0].number_input(
            "repetition: share ≥", 0.0, 1.0, REPETITION_RATE, 0.05, key=f"{PREFIX}.rep_rate",
            help="Of the answer's runs of n consecutive tokens, the share that already "
                 "occurred earlier in it (seq-rep-n): prose is near 0, a loop near 1."),
        repetition_n=int(third[1].number_input("repetition: n tokens", 1, 20, REPETITION_N,
                                               key=f"{PREFIX}.rep_n")))
    rule = st.radio("An answer matches its reference when it", list(MATCH_RULES),
                    format_func=MATCH_RULES.get, horizontal=True, key=f"{PREFIX}.answer_match",
                    help="The same matcher as Calibration's; the choice is stored with the "
                         "batch.")
    return FlagSettings(**{k: v if k in ("span_k", "repetition_n") else float(v)
                           for k, v in values.items()},
                        answer_match=rule)


def _entries(upload, pasted: str, dataset: str, system: tuple[Message, ...]):
    """What the batch reads: the upload, else the pasted lines, else the dataset."""
    if upload is not None:
        return lambda: read_items(upload.name, upload, system)
    if pasted.strip():
        return lambda: read_items("pasted.txt", io.BytesIO(pasted.encode("utf-8")), system)
    kind, _, ident = dataset.partition(":")
    return lambda: dataset_items(sample_dataset(ident) if kind == "sample"
                                 else load_dataset(resources.store(), ident), system)


def _create(engine, read, name: str, settings: RunSettings) -> None:
    store = resources.store()
    bar = st.progress(0.0, text="Reading the items…")
    try:
        entries = read()
        head = []  # unreadable lines before the first item, which sets the batch's kind
        for entry in entries:
            head.append(entry)
            if isinstance(entry, BatchInput):
                break
        if not head or not isinstance(head[-1], BatchInput):
            bar.empty()
            st.error("No item could be read" + (f" (line {head[0].line}: {plain(head[0].why)})"
                                                if head else "") +
                     ": put one prompt a line, or one transcript.")
            return
        batch_id = create_batch(store, name, batch_kind(head[-1]), engine.info.label,
                                settings.to_json(), session_panel.session_for_saving())
        items, bad = add_items(store, batch_id, itertools.chain(head, entries),
                               on_chunk=lambda n, m: bar.progress(
                                   0.5, text=f"Read {n:,} items ({m:,} unreadable lines)…"),
                               max_items=resources.batch_limit())
    except PerplexError as exc:
        bar.empty()
        st.error(plain(str(exc)))
        return
    bar.empty()
    st.session_state[BATCH_KEY] = batch_id
    if items:
        runs.start(RUN_KEY, batch_id)
    st.session_state[f"{PREFIX}.settings.{batch_id}"] = settings
    st.toast(f"Read {items:,} items" + (f"; {bad:,} lines could not be read" if bad else ""))
    st.rerun()


def batch_picker() -> BatchSummary | None:
    """The session's batches; the chosen one (the newest unless another was opened)."""
    sid = session_panel.current_session_id()
    batches = list_batches(resources.store(), sid) if sid else []
    if not batches:
        st.caption("No batch in this session yet.")
        return None
    ids = [b.id for b in batches]
    wanted = st.session_state.get(BATCH_KEY)
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox("Batch", range(len(batches)), index=index, key=f"{PREFIX}.picker",
                          format_func=lambda i: f"{batches[i].name} · {batches[i].total:,} "
                          f"{batches[i].kind} · {batches[i].created_at:%Y-%m-%d %H:%M}")
    batch = batches[chosen]
    if batch.id != wanted:
        st.session_state[BATCH_KEY] = batch.id
        st.session_state.pop(READER_KEY, None)
    return batch


def _settings_of(batch: BatchSummary) -> RunSettings:
    kept = st.session_state.get(f"{PREFIX}.settings.{batch.id}")
    if kept is not None:
        return kept
    stored = batch.settings
    try:
        return RunSettings(params_from_dict(stored["params"]), FlagSettings(**stored["flags"]),
                           bool(stored.get("rescore", False)),
                           refusal_words=tuple(stored.get("refusal_words", ())))
    except (KeyError, TypeError, ValueError, PerplexError):  # a batch from a bundle
        st.warning("This batch's stored settings are incomplete; running it uses the "
                   "default generation and flag settings.")
        return RunSettings(DecodeParams())


def run_section(engine, batch: BatchSummary, second=None) -> None:
    """Progress of the batch; run, stop, resume, retry the failed items."""
    st.caption(f"Model {plain(batch.model_label)}"
               + (f" · {batch.n_malformed:,} unreadable lines" if batch.n_malformed else ""))
    if batch.malformed:
        with st.expander(f"Unreadable lines ({batch.n_malformed:,})"):
            st.dataframe(pd.DataFrame([{"line": m.line, "why": m.why} for m in batch.malformed]),
                         hide_index=True, width="stretch")
            if batch.n_malformed > len(batch.malformed):
                st.caption(f"The first {len(batch.malformed)} are listed.")
    if engine is None:
        st.info("Load a model (sidebar) to run the batch.")
        return
    settings = _settings_of(batch)
    store = resources.store()
    try:
        work = batch_work(engine, store, batch.id, settings, second=second)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    runs.drive(RUN_KEY, batch.id, BatchItems(store, batch.id), work, unit="items",
               chunk=paced(CHUNK_SECONDS, 2, 1, CHUNK),
               retry_failed=lambda: reset_failed(store, batch.id))


def second_model():
    """The model answers are cross-scored under (the divergence flag), or None."""
    if not hasattr(resources.active_engine(), "word_probs") or not st.toggle(
            "Also flag divergence from a second model", key=f"{PREFIX}.use_second",
            help="Every answer is scored under both models, as in Comparison: about two "
                 "more forward passes per item. Applies to the items run from now on."):
        return None
    return choose_local_model("Second model", f"{PREFIX}.second", default="terse")


def flags_section(batch: BatchSummary) -> dict[str, int]:
    """How many finished items have each flag; the researcher's own flags in SQL."""
    store = resources.store()
    counts = flag_counts(store, batch.id)
    cols = st.columns(min(len(counts), 6))
    for n, (name, found) in enumerate(counts.items()):
        cols[n % len(cols)].metric(plain(FLAG_TITLES.get(name, name)),
                                   "—" if found is None else f"{found:,}",
                                   help="not computed for this batch" if found is None else None)
    with st.expander("How the flags are computed"):
        st.markdown(flags.__doc__.split("\n\n", 1)[1])
    with st.expander("Add a flag written in SQL"):
        st.caption("One SQL condition over `items` (one row per finished item: the filter's "
                   "columns) and `tokens` (idx, position, answer_position, text, role, prob, "
                   "logprob, entropy, rank; `answer_position` 0 is the answer's first token, "
                   "`position` 0 the template's first). It runs on a copy of this batch in a "
                   "separate in-memory database without file access, for at most 10 s; what "
                   "it matches is kept (add it again to update it after more items finish).")
        with st.form(f"{PREFIX}.custom_form"):
            name = st.text_input("Name", key=f"{PREFIX}.custom_name",
                                 placeholder="e.g. unsure start")
            condition = st.text_area(
                "Condition", key=f"{PREFIX}.custom_sql",
                placeholder="(SELECT prob FROM tokens t WHERE t.idx = items.idx AND "
                            "t.answer_position = 0) < 0.2")
            replace = st.checkbox("Replace a flag of the same name with another condition",
                                  key=f"{PREFIX}.custom_replace")
            if st.form_submit_button("Add the flag", disabled=session_panel.read_only()):
                try:
                    found = add_custom_flag(store, batch.id, name, condition, replace=replace)
                except PerplexError as exc:
                    st.error(plain(str(exc)))
                else:
                    st.toast(f"{plain(name.strip())}: {len(found):,} items.")
                    st.rerun()
        for own, flag in custom_flags(store, batch.id).items():
            st.markdown(f"**{plain(own)}**: `{flag['sql'].replace('`', '')}` "
                        f"({len(flag['matches']):,} items)")
    return counts


def filter_bar(batch: BatchSummary) -> Shown:
    """Flags to require, up to three conditions and the order: all parameterised."""
    names = list(FLAG_TITLES) + list(custom_flags(resources.store(), batch.id))
    chosen = st.multiselect("Items having every one of these flags", names,
                            format_func=lambda n: FLAG_TITLES.get(n, n),
                            key=f"{PREFIX}.flags.{batch.id}")
    conditions = [Condition(name) for name in chosen]
    words = [FLAG_TITLES.get(name, name) for name in chosen]
    active = any(st.session_state.get(f"{PREFIX}.col{row}", "(none)") != "(none)"
                 for row in range(FILTER_ROWS))
    with st.expander("Conditions on statistics and text", expanded=active):
        for row in range(FILTER_ROWS):
            cols = st.columns([2, 1, 2])
            column = cols[0].selectbox(f"Condition {row + 1}", ("(none)",) + FILTER_COLUMNS,
                                       key=f"{PREFIX}.col{row}")
            if column == "(none)":
                continue
            ops = TEXT_OPS if column in TEXT_COLUMNS else NUMBER_OPS
            op = cols[1].selectbox("is", ops, key=f"{PREFIX}.op{row}.{column}")
            value = cols[2].text_input("value", key=f"{PREFIX}.value{row}.{column}")
            if value.strip() or column in TEXT_COLUMNS:
                conditions.append(Condition(column, op, value))
                words.append(f"{column} {op} {value!r}")
    picked = st.session_state.get(RANGE_KEY)
    if picked and picked[0] == batch.id:
        _, stat, low, high = picked
        conditions += [Condition(stat, ">=", low), Condition(stat, "<=", high)]
        words.append(f"{low:.4g} ≤ {stat} ≤ {high:.4g} (histogram)")
        if st.button("Clear the histogram's range", key=f"{PREFIX}.clear_range"):
            st.session_state.pop(RANGE_KEY, None)
            st.rerun()
    cols = st.columns([2, 1])
    order = cols[0].selectbox("Sort by", ("idx",) + STATISTICS, key=f"{PREFIX}.order")
    descending = cols[1].toggle("Highest first", key=f"{PREFIX}.descending")
    return Shown(tuple(conditions), " and ".join(words), order, descending)


def items_section(batch: BatchSummary, shown: Shown) -> list[dict]:
    """The filtered items: a table, a row opens in the reader; the distribution plot."""
    try:
        rows = filter_items(resources.store(), batch.id, shown.conditions, shown.order_by,
                            shown.descending)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return []
    st.markdown(f"**{len(rows):,} of {batch.total:,} items**"
                + (f" with {plain(shown.words)}" if shown.words else ""))
    if not rows:
        return rows
    start = _page_start(batch, shown, len(rows))
    table = pd.DataFrame([{"#": r["idx"], "line": r["line"], "status": r["status"],
                           "prompt": (r["prompt"] or "")[:120],
                           "answer": (r["answer"] or r["error"] or "")[:120],
                           "mean p": r["mean_prob"], "perplexity": r["perplexity"],
                           "low-p": r["low_confidence"], "spikes": r["entropy_spikes"],
                           "spans": r["hallucination_spans"], "P(R-Set)": r["refusal_prob"],
                           "KL to 2nd": r["divergence"], "repetition": r["repetition"],
                           "mismatch": r["answer_mismatch"]}
                          for r in rows[start:start + TABLE_PAGE]])
    picked = st.dataframe(table, hide_index=True, width="stretch", height=260,
                          on_select="rerun", selection_mode="single-row",
                          key=f"{PREFIX}.table.{batch.id}.{hash(shown)}.{start}")
    if picked and picked.selection.rows:
        st.session_state[READER_KEY] = start + picked.selection.rows[0]
    _distribution(batch, rows)
    return rows


def _page_start(batch: BatchSummary, shown: Shown, n_rows: int) -> int:
    """The first row of the table's page: the table holds one page, the rest stay here."""
    pages = -(-n_rows // TABLE_PAGE)
    if pages == 1:
        return 0
    cols = st.columns([1, 3])
    page = int(cols[0].number_input(f"Page (of {pages:,})", 1, pages, 1,
                                    key=f"{PREFIX}.page.{batch.id}.{hash(shown)}"))
    start = (page - 1) * TABLE_PAGE
    cols[1].caption(f"Items {start + 1:,}–{min(n_rows, start + TABLE_PAGE):,} of {n_rows:,}: "
                    f"the table shows {TABLE_PAGE} at a time; the reader, the distribution and "
                    "the exports take every filtered item.")
    return start


def _distribution(batch: BatchSummary, rows: list[dict]) -> None:
    stat = st.selectbox("Distribution of", STATISTICS, index=STATISTICS.index("perplexity"),
                        key=f"{PREFIX}.stat")
    values = [r[stat] for r in rows]
    edges = statistic_bins(values)
    fig = statistic_histogram(stat, values, edges)
    event = st.plotly_chart(fig, key=f"{PREFIX}.hist.{batch.id}.{stat}", on_select="rerun",
                            selection_mode="points")
    points = event.get("selection", {}).get("points", []) if event else []
    if points:
        low, high = points[0]["customdata"]
        wanted = (batch.id, stat, float(low), float(high))
        if st.session_state.get(RANGE_KEY) != wanted:
            st.session_state[RANGE_KEY] = wanted
            st.rerun()
    st.session_state[f"{PREFIX}.figure"] = fig


def reader_section(rows: list[dict], local: Engine | None, params: DecodeParams) -> None:
    """The filtered items one after another (j / k), flagged tokens marked; annotate.

    `local` (the sidebar's model) serves branching from a token, as on the Default page.
    """
    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return
    st.subheader("Reader")
    at = min(st.session_state.get(READER_KEY, 0), len(rows) - 1)
    cols = st.columns([1.4, 1.4, 3, 2, 2])
    if cols[0].button("Previous", key=f"{PREFIX}.prev", shortcut="k", disabled=at == 0,
                      width="stretch"):
        at -= 1
    if cols[1].button("Next", key=f"{PREFIX}.next", shortcut="j", width="stretch",
                      disabled=at >= len(rows) - 1):
        at += 1
    st.session_state[READER_KEY] = at
    row = rows[at]
    cols[2].markdown(f"**Item {at + 1} of {len(rows)}** · #{row['idx']} (line {row['line']})")
    if row["status"] != "done":
        st.warning(f"This item {row['status']}: {plain(row['error'] or 'not run yet')}")
        return
    generation = item_generation(resources.store(), row["generation_id"])
    if cols[3].button("Open on the Default page", key=f"{PREFIX}.to_default"):
        _open_on_default(generation)
    if cols[4].button("Open in the Logit Lens", key=f"{PREFIX}.to_lens"):
        page_state.open_in_lens(generation.id, None)
    st.session_state[CURRENT] = generation
    found = ItemFlags.from_json(json.loads(row["flagged"] or "{}"),
                                row["answer_mismatch"])
    marks = {generation.steps[i].position: why for i, why in found.marks().items()}
    st.caption(plain(_item_line(row)))
    event = show_transcript(generation, f"{PREFIX}.item", thresholds(),
                            extras=investigate.view_extras,
                            alerts=lambda steps: {i: marks[s.position] for i, s in
                                                  enumerate(steps) if s.position in marks})
    investigate.act_on(event, generation, CURRENT, local, params)


def _item_line(row: dict) -> str:
    parts = [f"mean p {row['mean_prob']:.3f}" if row["mean_prob"] is not None else "",
             f"perplexity {row['perplexity']:.3g}" if row["perplexity"] is not None else "",
             f"{row['low_confidence']} low-confidence",
             count(row["entropy_spikes"], "entropy spike"),
             count(row["hallucination_spans"], "hallucination span")]
    if row["refusal_prob"] is not None:
        parts.append(f"P(R-Set) {row['refusal_prob']:.3f} at the first token")
    if row["divergence"] is not None:
        parts.append(f"mean KL to the second model {row['divergence']:.3f} nats")
    if row["repetition"] is not None:
        parts.append(f"repetition {row['repetition']:.2f}")
    if row["answer_mismatch"] is not None:
        expected = " | ".join(json.loads(row["reference"]))
        parts.append(f"answer ≠ reference “{expected}”" if row["answer_mismatch"]
                     else f"answer matches “{expected}”")
    return " · ".join(p for p in parts if p) + " · flagged tokens carry a red dot."


def _open_on_default(generation) -> None:
    key = page_state.current_key("default")
    st.session_state[key] = generation
    if not session_panel.read_only():
        session_panel.remember_shown(key, generation.id)
    st.switch_page(DEFAULT_PAGE)


def export_section(batch: BatchSummary, rows: list[dict], counts: dict[str, int],
                   shown: Shown) -> None:
    """The filtered items as CSV, per-token Parquet, JSONL; a Markdown report; the figure."""
    if not rows:
        return
    store = resources.store()
    with st.expander(f"Export the {len(rows):,} filtered items"):
        name = f"perplex-batch-{batch.id}"
        cols = st.columns(4)
        about = {"batch": batch.name, "model_label": batch.model_label,
                 "settings": json.dumps(batch.settings)}
        download(cols[0], "Items (CSV)", lambda: items_csv(rows, about), file_name=f"{name}.csv",
                 mime="text/csv", key=f"{PREFIX}.csv")
        download(cols[1], "Per-token records (Parquet)", lambda: items_tokens_parquet(store, rows),
                 file_name=f"{name}-tokens.parquet", key=f"{PREFIX}.parquet")
        download(cols[2], "Items with tokens (JSONL)", lambda: items_jsonl(store, rows),
                 file_name=f"{name}.jsonl", mime="application/json", key=f"{PREFIX}.jsonl")
        download(cols[3], "Summary report (Markdown)",
                 lambda: report_markdown(batch, counts, FLAG_TITLES, rows, shown.words),
                 file_name=f"{name}-report.md", mime="text/markdown", key=f"{PREFIX}.report")
        fig = st.session_state.get(f"{PREFIX}.figure")
        if fig is None:
            return
        figure_key = f"{PREFIX}.fig.{batch.id}.{hash(shown)}"
        figure_downloads(fig, f"{name}-distribution", figure_key, "The distribution figure",
                         caption_line(f"batch “{batch.name}”", batch.model_label,
                                      f"{len(rows):,} items shown"))
        png = rendered_figure(figure_key, "png")
        if png is None:
            st.caption("Render the PNG to download the report with its figure (ZIP).")
            return
        figure_name = f"{name}-distribution.png"
        download(st, "Report with its figure (ZIP)",
                 lambda: report_zip(report_markdown(batch, counts, FLAG_TITLES, rows,
                                                    shown.words, figure_name),
                                    png, figure_name),
                 file_name=f"{name}-report.zip", mime="application/zip",
                 key=f"{PREFIX}.report_zip")
