"""The Calibration page's parts: the dataset, the run (progress, stop, resume), the results.

A run keeps every finished item in the database, so Stop (any rerun) loses at most the
item in flight, and the run goes on after other reruns until Stop is pressed; a run left
unfinished resumes with the items it lacks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from perplex.core.calibration import CONFIDENCE_KINDS, Dataset, ItemResult
from perplex.core.errors import PerplexError
from perplex.core.plots import caption_line
from perplex.engine.registry import endpoint_engine
from perplex.engine.spec import BUNDLED, ModelSpec
from perplex.modes.calibration.answers import MATCH_RULES
from perplex.modes.calibration.datasets import (
    PRESETS,
    FieldMap,
    build_dataset,
    detect_preset,
    field_names,
    read_records,
    sample_dataset,
)
from perplex.modes.calibration.judge import JUDGE_PROMPT, check_judge_prompt
from perplex.modes.calibration.metrics import BINNINGS, bin_members, summarise
from perplex.modes.calibration.plots import reliability_diagram, risk_coverage_figure
from perplex.modes.calibration.run import TEMPLATES, CalibrationItems, Template, calibration_work
from perplex.modes.calibration.table import (
    parse_failures,
    results_csv,
    results_frame,
    results_parquet,
)
from perplex.ui.components import runs
from perplex.ui.components.export_panel import download
from perplex.ui.components.file_input import uploaded_file
from perplex.ui.shell import resources
from perplex.ui.shell.text import count, plain
from perplex.workspace.calibration_store import (
    RunSummary,
    create_run,
    list_runs,
    load_dataset,
    load_results,
    sample_dataset_id,
    save_dataset,
    set_override,
)
from perplex.workspace.exports import with_provenance

PREFIX = "calib"
DATASET_KEY = f"{PREFIX}.dataset_id"
RUNS_KEY = f"{PREFIX}.runs"  # the run being answered (`ui.runs`)
SHOWN_KEY = f"{PREFIX}.shown_run"  # the run whose results are on screen
DATASET_FILE_KEY = f"{PREFIX}.dataset_file"  # the upload the current dataset was made from
OWN_MAPPING = "my own mapping"
SAMPLES = {"sample: 105 trivia questions (TriviaQA format)": "trivia",
           "sample: 42 four-choice questions (MMLU format)": "mmlu"}
UPLOAD = "upload a dataset"
CONFIDENT = 0.8  # "confidently wrong": wrong with at least this confidence
BATCH = 8  # items decoded together on a local model (Stop loses at most the batch in flight)
NUMBERS = {c: st.column_config.NumberColumn(format="%.3f")
           for c in ("ECE (equal width)", "ECE (equal mass)", "Brier", "AUROC", "AURC",
                     "judge p", *CONFIDENCE_KINDS)}


def dataset_section(store) -> Dataset | None:
    """Pick a sample or upload one with a field mapping; the chosen one is stored."""
    st.subheader("1 · Dataset")
    choice = st.radio("Questions", [*SAMPLES, UPLOAD], key=f"{PREFIX}.source",
                      label_visibility="collapsed")
    if choice in SAMPLES:
        wanted = sample_dataset_id(SAMPLES[choice], store)
        if st.session_state.get(DATASET_KEY) != wanted:
            dataset = sample_dataset(SAMPLES[choice])
            save_dataset(store, Dataset(dataset.name, dataset.items, id=wanted))
            st.session_state[DATASET_KEY] = wanted
    elif _upload(store) != st.session_state.get(DATASET_FILE_KEY):
        return None  # a new file (or none): its mapping first, not the last file's caption
    dataset_id = st.session_state.get(DATASET_KEY)
    if dataset_id is None or (choice in SAMPLES) != dataset_id.startswith("sample-"):
        return None
    dataset = load_dataset(store, dataset_id)
    kinds = {item.multiple_choice for item in dataset.items}
    st.caption(f"{plain(dataset.name)}: {count(len(dataset.items), 'item')}"
               f"{' (multiple choice)' if kinds == {True} else ''}.")
    return dataset


def _upload(store) -> str | None:
    """The uploader and its field mapping; the file's id (None: no readable file)."""
    file = uploaded_file("CSV, JSONL or JSON", type=["csv", "jsonl", "ndjson", "json"],
                         key=f"{PREFIX}.upload")
    if file is None:
        return None
    try:
        rows = read_records(file.name, file.getvalue())
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return None
    names = field_names(rows)
    presets = [*PRESETS, OWN_MAPPING]
    detected = detect_preset(names) or OWN_MAPPING  # each new file starts from its fields
    preset = st.selectbox("Fields as in", presets, index=presets.index(detected),
                          key=f"{PREFIX}.preset.{file.file_id}")
    base = PRESETS.get(preset, FieldMap(question=names[0] if names else ""))
    none = "(none)"
    options = [none, *names]

    def pick(label: str, current: str | None) -> str | None:
        index = options.index(current) if current in options else 0
        chosen = st.selectbox(label, options, index=index,
                              key=f"{PREFIX}.map.{file.file_id}.{preset}.{label}")
        return None if chosen == none else chosen

    cols = st.columns(3)
    with cols[0]:
        question = pick("question", base.question)
        item_id = pick("id", base.id)
    with cols[1]:
        answer = pick("answer", base.answer)
        aliases = pick("aliases", base.aliases)
    with cols[2]:
        choices = pick("choices", base.choices)
        answer_index = pick("answer index or letter", base.answer_index)
    if st.button("Use this dataset", key=f"{PREFIX}.use"):
        try:
            dataset = build_dataset(file.name, rows, FieldMap(
                question=question or "", answer=answer, aliases=aliases, choices=choices,
                answer_index=answer_index, id=item_id))
        except PerplexError as exc:
            st.error(plain(str(exc)))
            return
        save_dataset(store, dataset)
        st.session_state[DATASET_KEY] = dataset.id
        st.session_state[DATASET_FILE_KEY] = file.file_id
        st.session_state.pop(f"{RUNS_KEY}.job", None)
    return file.file_id


JUDGES = {"none": "the matcher only (TriviaQA normalisation; option letters)",
          "local": "the local model as judge",
          "model": "another local model as judge",
          "engine": "the sidebar's engine as judge",
          "endpoint": "an OpenAI-compatible endpoint as judge"}
JUDGE_KEY = f"{PREFIX}.judge_api_key"  # the judge endpoint's key: this session's memory only


@dataclass(frozen=True)
class RunSettings:
    """How items are asked and checked: prompts, P(True) or not, the judge, how many items."""

    template: Template
    with_p_true: bool
    limit: int
    judge: str = "none"
    judge_prompt: str = JUDGE_PROMPT
    judge_endpoint: dict | None = None  # base URL and model (never the key), or the source
    match_rule: str = "exact"  # `answers.MATCH_RULES`: how a free answer meets its aliases

    def to_json(self) -> dict:
        """The settings as stored with the run (no API key)."""
        return {"free": self.template.free, "choice": self.template.choice,
                "with_p_true": self.with_p_true, "limit": self.limit, "judge": self.judge,
                "judge_prompt": self.judge_prompt, "judge_endpoint": self.judge_endpoint,
                "match_rule": self.match_rule}


def settings_section(dataset: Dataset) -> RunSettings | None:
    """The prompts (editable) and the run's size; None with a message if a prompt is bad."""
    st.subheader("2 · Asking")
    with st.expander("Prompts (editable)"):
        preset = st.selectbox("Preset", list(TEMPLATES), key=f"{PREFIX}.preset_prompt")
        free_default, choice_default = TEMPLATES[preset]
        free = st.text_area("Free answer ({question})", free_default,
                            key=f"{PREFIX}.free.{preset}")
        choice = st.text_area("Multiple choice ({question}, {options})", choice_default,
                              key=f"{PREFIX}.choice.{preset}")
    cols = st.columns(2)
    if st.session_state.get(f"{PREFIX}.limit_of") != dataset.id:  # a new dataset: all of it
        st.session_state[f"{PREFIX}.limit_of"] = dataset.id
        st.session_state[f"{PREFIX}.limit"] = len(dataset.items)
    limit = cols[0].number_input("items to answer", 1, len(dataset.items),
                                 key=f"{PREFIX}.limit")
    with_p_true = cols[1].checkbox("also ask P(True) (one more pass per item)",
                                   key=f"{PREFIX}.ptrue")
    chosen = resources.active_engine()
    local_only = chosen is None or not resources.remote_engine_chosen()
    judges = [j for j in JUDGES if not (j == "engine" and local_only)]
    judge_choice = st.radio("Checking", judges, format_func=JUDGES.get, horizontal=True,
                            key=f"{PREFIX}.judge")
    judge_prompt, endpoint = JUDGE_PROMPT, None
    if judge_choice == "model":
        source = st.text_input("Judge model (Hugging Face id, local folder or .gguf; empty: "
                               "the bundled model)", key=f"{PREFIX}.judge_source").strip()
        endpoint = {"source": source or BUNDLED}
    if judge_choice == "endpoint":
        cols = st.columns(3)
        url = cols[0].text_input("Judge's base URL", key=f"{PREFIX}.judge_url",
                                 placeholder="http://127.0.0.1:8000/v1")
        model = cols[1].text_input("Judge's model", key=f"{PREFIX}.judge_model")
        cols[2].text_input("Judge's API key (kept in memory only)", type="password",
                           key=JUDGE_KEY)
        if not url.strip() or not model.strip():
            st.info("Give the judge's base URL and model.")
            return None
        endpoint = {"base_url": url.strip(), "model": model.strip()}
    if judge_choice != "none":
        judge_prompt = st.text_area("Judge's prompt ({question}, {references}, {answer})",
                                    JUDGE_PROMPT, key=f"{PREFIX}.judge_prompt")
    rule = st.radio("A free answer is correct when it", list(MATCH_RULES),
                    format_func=MATCH_RULES.get, horizontal=True, key=f"{PREFIX}.match_rule",
                    help="The same matcher as Batch's reference check; stored with the run. "
                         "Exact is TriviaQA's official metric.")
    try:
        if judge_choice != "none":
            check_judge_prompt(judge_prompt)
        return RunSettings(Template(free, choice), with_p_true, int(limit), judge_choice,
                           judge_prompt, endpoint, rule)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return None


def run_section(engine, store, dataset: Dataset, settings: RunSettings) -> None:
    """Start a run, or go on with the current one (`ui.runs`): Stop keeps what is done."""
    st.subheader("3 · Running")
    if st.button("Run", type="primary", key=f"{PREFIX}.run", disabled=engine is None):
        run_id = create_run(store, dataset.id, engine.info.label, settings.to_json())
        st.session_state[SHOWN_KEY] = run_id  # its results, as they come
        runs.start(RUNS_KEY, run_id)
    run = _current_run(store, dataset)
    if run is None or engine is None:
        return
    drive_run(RUNS_KEY, store, run, engine)
    if run.model_label != engine.info.label:
        st.caption(f"This run answers on {plain(run.model_label)}; load it to resume the run.")


def drive_run(key: str, store, run: RunSummary, engine) -> None:
    """Answer `run`'s items on `engine` under `key` (`ui.runs`), with the judge it names.

    Only the engine the run was started on answers; with another, Resume is disabled.
    """
    try:
        judge = judge_engine(run.settings)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    runs.drive(key, run.id, CalibrationItems.of(store, run),
               calibration_work(engine, run.settings, judge), unit="items",
               chunk=BATCH, can_run=run.model_label == engine.info.label)


def judge_engine(settings: dict):
    """The judge a run's settings name (the endpoint's key from this session's memory)."""
    kind = settings.get("judge", "none")
    if kind == "local":
        return resources.local_engine()
    if kind == "engine":
        return resources.active_engine()
    if kind == "model":
        with st.spinner("Loading the judge model…"):
            return resources.model_registry().get(
                ModelSpec(source=settings["judge_endpoint"]["source"]))
    if kind == "endpoint":
        where = settings["judge_endpoint"]
        return endpoint_engine(where["base_url"], where["model"],
                              st.session_state.get(JUDGE_KEY, ""))
    return None


def _current_run(store, dataset: Dataset) -> RunSummary | None:
    """The run this tab started on the dataset, else (after a reload) its newest."""
    on_dataset = [r for r in list_runs(store) if r.dataset_id == dataset.id]
    wanted = st.session_state.get(f"{RUNS_KEY}.job")
    found = next((r for r in on_dataset if r.id == wanted), None) or \
        next(iter(on_dataset), None)
    if found is not None:
        st.session_state[f"{RUNS_KEY}.job"] = found.id
    return found


def results_section(store, show_item) -> None:
    """Metrics, the reliability diagram, the items of a bin, one item in the token view."""
    st.subheader("4 · Results")
    runs = [r for r in list_runs(store) if r.n_done]
    if not runs:
        st.caption("No run has answered an item yet.")
        return
    labels = {r.id: f"{r.dataset_name} · {r.model_label} · {r.n_done:,} items · "
                    f"{r.created_at:%Y-%m-%d %H:%M}" for r in runs}
    ids = list(labels)
    current = st.session_state.get(f"{RUNS_KEY}.job")
    wanted = st.session_state.get(SHOWN_KEY)
    if wanted not in ids:
        wanted = current if current in ids else ids[0]
    # Keyed by the run wanted: a run started (or stopped) while this picker was not drawn
    # shows at once; a picker keyed once kept the browser's older choice.
    run_id = st.selectbox("Run", ids, index=ids.index(wanted), format_func=labels.get,
                          key=f"{PREFIX}.run_pick.{wanted}")
    st.session_state[SHOWN_KEY] = run_id
    others = ["(none)", *[i for i in ids if i != run_id]]
    other = st.selectbox("Compare with", others, key=f"{PREFIX}.other_run",
                         format_func=lambda i: labels.get(i, i))
    run = next(r for r in runs if r.id == run_id)
    results = load_results(store, run_id)
    dataset = load_dataset(store, run.dataset_id)
    cols = st.columns(2)
    n_bins = cols[0].slider("bins", 2, 20, 10, key=f"{PREFIX}.bins")
    binning = cols[1].radio("binning", BINNINGS, horizontal=True, key=f"{PREFIX}.binning")
    summary = summarise(results, CONFIDENCE_KINDS, n_bins)
    if not summary:
        st.info("No item of this run has a confidence yet.")
        return
    st.caption("Free answers were correct when they: "
               + MATCH_RULES.get(run.settings.get("match_rule", "exact"), "?") + ".")
    _metrics_table(results, summary)
    kinds = st.multiselect("Confidence kinds on the diagram", list(summary),
                           default=list(summary)[:2], key=f"{PREFIX}.kinds")
    curves = {k: (summary[k].width if binning == BINNINGS[0] else summary[k].mass)
              for k in kinds}
    if other != "(none)":
        other_summary = summarise(load_results(store, other), kinds, n_bins)
        curves.update({f"{k} · {labels[other].split(' · ')[1]} (compared)":
                       (s.width if binning == BINNINGS[0] else s.mass)
                       for k, s in other_summary.items()})
    figure = reliability_diagram(curves)
    picked = st.plotly_chart(figure, on_select="rerun", selection_mode="points",
                             key=f"{PREFIX}.diagram.{run_id}.{n_bins}.{binning}")
    st.plotly_chart(risk_coverage_figure({k: summary[k].risk for k in kinds}),
                    key=f"{PREFIX}.risk")
    members = _picked_bin(picked, results, summary, binning, kinds)
    frame = results_frame(dataset, results)
    exported = with_provenance(frame, {"dataset": run.dataset_name,
                                       "model_label": run.model_label,
                                       "settings": json.dumps(run.settings)})
    _downloads(exported, figure, run_id, caption_line(
        f"dataset “{run.dataset_name}”", run.model_label, f"{len(results):,} items",
        f"{n_bins} bins, {binning}", f"match rule {run.settings.get('match_rule', 'exact')}",
        f"run {run_id}"))
    _items(frame, results, members, kinds, run_id, store, show_item)


def _metrics_table(results: list[ItemResult], summary) -> None:
    rows = [{"confidence": k, "items": s.width.n, "missing": s.width.missing,
             "ECE (equal width)": s.width.ece, "ECE (equal mass)": s.mass.ece,
             "Brier": s.brier, "AUROC": s.auroc, "AURC": s.risk.area}
            for k, s in summary.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=NUMBERS)
    accuracy = sum(r.verdict for r in results) / len(results)
    overruled = sum(r.override is not None for r in results)
    one_class = " · AUROC is undefined while every verdict is the same" \
        if any(math.isnan(s.auroc) for s in summary.values()) else ""
    st.caption(f"Accuracy {accuracy:.3f} over {count(len(results), 'item')}"
               f"{f' ({overruled} verdicts set by hand)' if overruled else ''} · stated "
               f"confidence unreadable in {parse_failures(results):.0%} of the answers "
               f"(recorded as missing, never guessed){one_class}.")


def _picked_bin(picked, results, summary, binning, kinds):
    points = (picked or {}).get("selection", {}).get("points", []) if picked else []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 2 and data[1] in summary \
                and data[1] in kinds:
            kind, index = data[1], int(data[0])
            rel = summary[kind].width if binning == BINNINGS[0] else summary[kind].mass
            return kind, index, bin_members(results, kind, rel, index)
    return None


def _downloads(frame: pd.DataFrame, figure, run_id: str, caption: str) -> None:
    from perplex.workspace.exports import figure_image

    cols = st.columns(4)
    name = f"perplex-calibration-{run_id}"
    download(cols[0], "Items (CSV)", data=lambda: results_csv(frame), file_name=f"{name}.csv",
             mime="text/csv", key=f"{PREFIX}.csv")
    download(cols[1], "Items (Parquet)", data=lambda: results_parquet(frame),
             file_name=f"{name}.parquet", mime="application/octet-stream",
             key=f"{PREFIX}.parquet")
    download(cols[2], "Diagram (PNG)", data=lambda: figure_image(figure, "png", caption=caption),
             file_name=f"{name}.png", mime="image/png", key=f"{PREFIX}.png")
    download(cols[3], "Diagram (SVG)", data=lambda: figure_image(figure, "svg", caption=caption),
             file_name=f"{name}.svg", mime="image/svg+xml", key=f"{PREFIX}.svg")


def _items(frame, results, members, kinds, run_id, store, show_item) -> None:
    if members is not None:
        kind, index, chosen = members
        st.markdown(f"**Bin {index} of {plain(kind)}: {count(len(chosen), 'item')}**")
        ids = {r.item_id for r in chosen}
        shown = frame[frame["item"].isin(ids)]
    else:
        wrong = st.toggle(f"Only confidently wrong (≥ {CONFIDENT} on "
                          f"{kinds[0] if kinds else 'verbalized'}, wrong)",
                          key=f"{PREFIX}.wrong")
        kind = kinds[0] if kinds else "verbalized"
        shown = frame[(~frame["correct"]) & (frame[kind].fillna(-1) >= CONFIDENT)] if wrong \
            else frame
        st.caption("Click a point of the diagram to list its bin's items.")
    judged = shown["judge"].notna().any()
    table = shown[["item", "question", "truth", "answer", "correct", "overruled",
                   *(["match", "judge", "judge p"] if judged else []),
                   "stated", *[k for k in kinds if k in shown]]]
    picked = st.dataframe(table, hide_index=True, on_select="rerun",
                          selection_mode="single-row", column_config=NUMBERS,
                          key=f"{PREFIX}.items.{run_id}.{len(table)}")
    rows = picked.selection.rows if picked else []
    if not rows:
        return
    item_id = table.iloc[rows[0]]["item"]
    result = next(r for r in results if r.item_id == item_id)
    _verdict(store, run_id, result)
    show_item(result)


def _verdict(store, run_id: str, result: ItemResult) -> None:
    by = "match" if result.judged is None else "judge"
    automatic = f"{by}: " + ("right" if (result.correct if result.judged is None
                                          else result.judged) else "wrong")
    options = [f"automatic ({automatic})", "right", "wrong"]
    now = 0 if result.override is None else (1 if result.override else 2)
    chosen = st.radio(f"Verdict on {plain(result.item_id)}", options, index=now, horizontal=True,
                      key=f"{PREFIX}.verdict.{run_id}.{result.item_id}")
    wanted = None if chosen == options[0] else chosen == "right"
    if wanted != result.override:
        set_override(store, run_id, result.item_id, wanted)
        st.rerun()
