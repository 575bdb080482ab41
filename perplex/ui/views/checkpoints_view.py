"""The Checkpoints page's parts: one dataset under several checkpoints, and what changed.

Each checkpoint's answers are a calibration run (the same runner: progress, Stop, Resume;
the runs show on the Calibration page too), asked exactly as the dataset's first run was,
so accuracy differs only by the model. The comparison reads the stored runs; the reference
answers are scored on request under the checkpoints' own models, loaded again from the
spec stored with their answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from perplex.core.calibration import Dataset
from perplex.core.comparison import answer_steps
from perplex.core.errors import PerplexError
from perplex.core.plots import visible_token
from perplex.core.significance import LEVEL, PairedChange
from perplex.modes.calibration.checkpoints import (
    CheckpointComparison,
    Flip,
    ReferenceChange,
    compare_runs,
    items_by_id,
    movements,
    reference_change,
    reference_text,
    score_reference,
)
from perplex.modes.calibration.datasets import sample_dataset
from perplex.modes.calibration.judge import JUDGE_PROMPT
from perplex.modes.calibration.plots import checkpoint_accuracy_figure, movement_figure
from perplex.modes.calibration.run import CHOICE_TEMPLATE, FREE_TEMPLATE, Template
from perplex.modes.comparison.cross import first_answer_divergence
from perplex.modes.comparison.plots import divergence_colour
from perplex.ui.components import runs
from perplex.ui.components.answer_pair import answers_side_by_side
from perplex.ui.components.token_view import Overlay, token_view
from perplex.ui.shell import resources
from perplex.ui.shell.model_choice import choose_local_model, engine_of_spec
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import count, plain
from perplex.ui.views.calibration_view import SAMPLES, drive_run
from perplex.workspace.calibration_store import (
    RunSummary,
    create_run,
    list_datasets,
    list_runs,
    load_dataset,
    load_results,
    sample_dataset_id,
    save_dataset,
)

PREFIX = "checkpoints"
RUNS_KEY = f"{PREFIX}.runs"  # the checkpoint run being answered (`ui.runs`)
REFERENCES_KEY = f"{PREFIX}.references"  # DatasetReferences of the pair on screen
FIRST_ITEMS = 40  # items a new checkpoint answers at first (the sample has 105)
MOVED = 10  # tokens (or words) drawn at each end of the gained-and-lost chart
DIRECTIONS = {"both": "both ways", "gained": "wrong → right", "lost": "right → wrong"}


@dataclass(frozen=True)
class DatasetReferences:
    """Every shared item's reference scored under a baseline and a later run."""

    before: str
    after: str
    changes: tuple[ReferenceChange, ...]
    split_differently: int  # items whose reference the two tokenised differently


def dataset_section(store) -> Dataset | None:
    """A stored dataset or a shipped sample (stored once picked)."""
    st.subheader("1 · Dataset")
    choices = {i: f"{name} · {count(n, 'item')}" for i, name, n in list_datasets(store)}
    samples = {sample_dataset_id(kind, store): (label, kind) for label, kind in SAMPLES.items()}
    choices.update({i: label for i, (label, _) in samples.items() if i not in choices})
    chosen = st.selectbox("Questions with known answers", list(choices),
                          format_func=choices.get, key=f"{PREFIX}.dataset")
    if chosen in samples and not any(i == chosen for i, _, _ in list_datasets(store)):
        shipped = sample_dataset(samples[chosen][1])
        save_dataset(store, Dataset(shipped.name, shipped.items, id=chosen))
    st.caption("Your own file: upload it on the Calibration page, then pick it here.")
    return load_dataset(store, chosen)


def _runs_on(store, dataset: Dataset) -> list[RunSummary]:
    """The dataset's runs, oldest first: the first is the baseline."""
    return sorted((r for r in list_runs(store) if r.dataset_id == dataset.id),
                  key=lambda r: r.created_at)


def _settings(existing: list[RunSummary], limit: int) -> dict:
    """A new checkpoint is asked as the dataset's first run was (defaults without one)."""
    if existing:
        return {**existing[0].settings, "limit": limit}
    return {"free": FREE_TEMPLATE, "choice": CHOICE_TEMPLATE, "with_p_true": False,
            "limit": limit, "judge": "none", "judge_prompt": JUDGE_PROMPT,
            "judge_endpoint": None, "match_rule": "exact"}


def checkpoint_section(store, dataset: Dataset) -> None:
    """Answer the dataset under a chosen model, with the runner's progress and Stop."""
    st.subheader("2 · Checkpoints")
    existing = _runs_on(store, dataset)
    if existing:
        st.dataframe(pd.DataFrame([{"checkpoint": f"{n}. {r.model_label}",
                                    "items answered": f"{r.n_done} of {r.n_items}",
                                    "started": f"{r.created_at:%Y-%m-%d %H:%M}"}
                                   for n, r in enumerate(existing, 1)]), hide_index=True)
    engine = _chosen_checkpoint()
    limit = st.number_input("items to answer", 1, len(dataset.items),
                            min(FIRST_ITEMS, len(dataset.items)), key=f"{PREFIX}.limit")
    st.caption("Asked with the prompts, matcher and judge of the dataset's first run, so the "
               "runs differ only by the model." if existing else
               "Asked with the Calibration page's default prompts and exact matching.")
    if st.button("Answer under this checkpoint", type="primary", key=f"{PREFIX}.run",
                 disabled=engine is None):
        run_id = create_run(store, dataset.id, engine.info.label, _settings(existing, limit))
        runs.start(RUNS_KEY, run_id)
    run = next((r for r in _runs_on(store, dataset)
                if r.id == st.session_state.get(f"{RUNS_KEY}.job")), None)
    if run is None or engine is None:
        return
    st.caption(f"Answering under {plain(run.model_label)}:")
    drive_run(RUNS_KEY, store, run, engine)


def _chosen_checkpoint():
    """A model loaded here, or the sidebar's endpoint or NDIF engine where one is chosen."""
    if resources.remote_engine_chosen() and st.radio(
            "Answer with", ["a model loaded here", "the sidebar's engine"], horizontal=True,
            key=f"{PREFIX}.where") == "the sidebar's engine":
        engine = resources.active_engine()
        st.caption(f"{plain(engine.info.label)}: its answers keep the probabilities it "
                   "returns; the reference answers are scored only under models loaded here.")
        return engine
    return choose_local_model("Answer the dataset under", f"{PREFIX}.model")


def changes_section(store, dataset: Dataset) -> None:
    """Accuracy per checkpoint, each change with its interval and test, the flipped items."""
    st.subheader("3 · What changed")
    answered = [r for r in _runs_on(store, dataset) if r.n_done]
    if len(answered) < 2:
        st.caption("Answer the dataset under two checkpoints to compare them.")
        return
    labels = {r.id: f"{n}. {r.model_label} · {count(r.n_done, 'item')} · "
                    f"{r.created_at:%Y-%m-%d %H:%M}" for n, r in enumerate(answered, 1)}
    chosen = st.multiselect("Checkpoints to compare (the first is the baseline)", list(labels),
                            default=list(labels)[-4:], format_func=labels.get,
                            key=f"{PREFIX}.compared")
    runs_by_id = {r.id: r for r in answered}
    picked = [runs_by_id[i] for i in labels if i in chosen]
    results = {r.id: load_results(store, r.id) for r in picked}
    try:
        comparison = compare_runs([(r.id, r.model_label, results[r.id]) for r in picked])
    except PerplexError as exc:
        st.info(plain(str(exc)))
        return
    st.plotly_chart(checkpoint_accuracy_figure(comparison), key=f"{PREFIX}.accuracy")
    _change_table(comparison)
    after = 1
    if len(picked) > 2:
        after = st.selectbox("Flipped items: baseline against", range(1, len(picked)),
                             format_func=lambda n: plain(comparison.checkpoints[n].label),
                             index=len(picked) - 2, key=f"{PREFIX}.after")
    engines = _RunEngines(store, results)
    _flipped_items(store, dataset, picked, after, comparison, engines)
    _dataset_references(dataset, picked[0], picked[after], comparison, engines)


def _change_table(comparison: CheckpointComparison) -> None:
    base = comparison.checkpoints[0]
    rows = [{"checkpoint": f"{n}. {c.label}", "right": f"{c.correct} of "
             f"{len(comparison.item_ids)}", "accuracy": c.accuracy.value,
             f"{LEVEL:.0%} interval": f"{c.accuracy.low:.3f} – {c.accuracy.high:.3f}",
             **_change_columns(comparison.changes[n - 2] if n > 1 else None)}
            for n, c in enumerate(comparison.checkpoints, 1)]
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        "accuracy": st.column_config.NumberColumn(format="%.3f")})
    for c, change in zip(comparison.checkpoints[1:], comparison.changes):
        st.caption(_change_sentence(base.label, c.label, base.accuracy.value,
                                    c.accuracy.value, change))


def _change_columns(change: PairedChange | None) -> dict:
    """The change against the baseline, as text: the baseline's own row says so."""
    if change is None:
        return dict.fromkeys(("change", "change interval", "wrong → right", "right → wrong",
                              "McNemar p"), "baseline")
    return {"change": f"{change.change.value:+.3f}",
            "change interval": f"{change.change.low:+.3f} – {change.change.high:+.3f}",
            "wrong → right": str(change.gained), "right → wrong": str(change.lost),
            "McNemar p": f"{change.p_value:.4f}"}


def _change_sentence(before: str, after: str, was: float, now: float,
                     change: PairedChange) -> str:
    return plain(
        f"{before} → {after}: accuracy {was:.3f} → {now:.3f} ({change.change.value:+.3f}, "
        f"{LEVEL:.0%} paired bootstrap interval {change.change.low:+.3f} to "
        f"{change.change.high:+.3f}); {count(change.gained, 'item')} went wrong → right "
        f"and {change.lost} right → wrong; McNemar's exact test p = {change.p_value:.4f}"
        f"{' (the change could well be chance)' if change.p_value >= 0.05 else ''}.")


def _flipped_items(store, dataset: Dataset, picked_runs: list[RunSummary], after_index: int,
                   comparison: CheckpointComparison, engines: _RunEngines) -> None:
    before, after = picked_runs[0], picked_runs[after_index]
    flips = comparison.flips[after_index - 1]
    st.markdown(f"**Items that flipped: {count(len(flips), 'item')}**")
    if not flips:
        return
    direction = st.radio("Show", list(DIRECTIONS), format_func=DIRECTIONS.get, horizontal=True,
                         key=f"{PREFIX}.direction")
    shown = [f for f in flips if direction == "both" or f.gained == (direction == "gained")]
    items = items_by_id(dataset)
    table = pd.DataFrame([{"item": f.item_id, "flip": DIRECTIONS["gained" if f.gained
                                                                  else "lost"],
                           "question": items[f.item_id].question,
                           "reference": reference_text(items[f.item_id]).strip(),
                           "answer before": f.before.answer, "answer after": f.after.answer}
                          for f in shown], columns=["item", "flip", "question", "reference",
                                                    "answer before", "answer after"])
    picked = st.dataframe(table, hide_index=True, on_select="rerun",
                          selection_mode="single-row",
                          key=f"{PREFIX}.flips.{before.id}.{after.id}.{direction}")
    rows = picked.selection.rows if picked else []
    if rows:
        _flip_detail(store, dataset, picked_runs, after_index, shown[rows[0]], engines)
    else:
        st.caption("Pick a row to see both answers and the reference scored under both.")


def _flip_detail(store, dataset: Dataset, picked: list[RunSummary], after: int,
                 flip: Flip, engines: _RunEngines) -> None:
    """Both answers, then the reference scored under every compared checkpoint."""
    gen_before = store.load_generation(flip.before.generation_id)
    gen_after = store.load_generation(flip.after.generation_id)
    verdict = {True: "right", False: "wrong"}
    answers_side_by_side(
        [("before", f"Before: {plain(picked[0].model_label)} "
                    f"({verdict[flip.before.verdict]})", answer_steps(gen_before)),
         ("after", f"After: {plain(picked[after].model_label)} "
                   f"({verdict[flip.after.verdict]})", answer_steps(gen_after))],
        first_answer_divergence(gen_before, gen_after), f"{PREFIX}-flip")
    item = items_by_id(dataset)[flip.item_id]
    template = Template.of_run(picked[0].settings)
    scored = [None if engine is None else score_reference(engine, item, template)
              for engine in map(engines.of, picked)]
    if scored[0] is None or scored[after] is None:
        st.caption("The reference is scored only under models loaded here: "
                   f"{plain(picked[0 if scored[0] is None else after].model_label)} is not "
                   "one (an endpoint's or NDIF's).")
        return
    change = reference_change(item.id, scored[0], scored[after])
    if change is None:
        st.caption("The two checkpoints split the reference into different tokens: no "
                   "token-by-token comparison.")
        return
    _reference_view(change, scored[after], picked[0].model_label, picked[after].model_label)
    _reference_table(picked, scored)


class _RunEngines:
    """The model each compared run answered with, loaded again from its answers' spec.

    None for a run whose model cannot be loaded here (an endpoint's or NDIF's).
    """

    def __init__(self, store, results: dict) -> None:
        """`results`: each run's stored results (the first names its model)."""
        self.store, self.results = store, results

    def of(self, run: RunSummary):
        """The engine of `run`."""
        first = self.results[run.id][0]
        return engine_of_spec(self.store.load_generation(first.generation_id).model_spec)


def _reference_table(picked: list[RunSummary], scored) -> None:
    """The reference tokens' log p under every checkpoint that splits them the same way."""
    base = [s.text for s in scored[0]]
    columns = {f"{n}. {run.model_label}": [s.logprob for s in steps]
               for n, (run, steps) in enumerate(zip(picked, scored), 1)
               if steps is not None and [s.text for s in steps] == base}
    st.dataframe(pd.DataFrame({"token": [visible_token(t) for t in base], **columns}),
                 hide_index=True, column_config={
                     name: st.column_config.NumberColumn(format="%.3f") for name in columns})
    left = len(picked) - len(columns)
    st.caption("log p of each reference token under every checkpoint"
               + (f" ({count(left, 'checkpoint')} left out: not loaded here, or split "
                  "differently)." if left else "."))


def _reference_view(change: ReferenceChange, under_after, before: str, after: str) -> None:
    rose = max(range(len(change.deltas)), key=lambda i: change.deltas[i])
    st.markdown(f"**The reference “{plain(''.join(change.texts).strip())}” under both**")
    st.caption(plain(
        f"log p of the whole reference after “Answer:”: {sum(change.before):.3f} before, "
        f"{sum(change.after):.3f} after ({change.total:+.3f} nats). Rose most: "
        f"“{visible_token(change.texts[rose])}” ({change.deltas[rose]:+.3f}). Colour: log p "
        f"after − before, blue where {after} gives the token more, orange where {before} "
        "did; the token view's own probabilities are the later checkpoint's."))
    overlay = Overlay(tuple(divergence_colour(d) for d in change.deltas),
                      tuple((f"log p before {b:.3f} · after {a:.3f} · change {a - b:+.3f}",)
                            for b, a in zip(change.before, change.after)),
                      label=f"after ({after})")
    th = thresholds()
    token_view(under_after, key=f"{PREFIX}-reference", confident=th.confident,
               uncertain=th.uncertain, highlight=rose, inert=True, overlay=overlay)


def _dataset_references(dataset: Dataset, before: RunSummary, after: RunSummary,
                        comparison: CheckpointComparison, engines: _RunEngines) -> None:
    st.markdown("**Over the whole dataset: which reference tokens gained and lost**")
    shown: DatasetReferences | None = st.session_state.get(REFERENCES_KEY)
    if shown is None or (shown.before, shown.after) != (before.id, after.id):
        st.caption(f"Scores the reference answer of each of the "
                   f"{count(len(comparison.item_ids), 'item')} under both checkpoints "
                   "(two passes per item).")
        if st.button("Score every reference under both", key=f"{PREFIX}.score_all"):
            scored = _score_all(dataset, before, after, comparison, engines)
            if scored is not None:
                st.session_state[REFERENCES_KEY] = scored
                st.rerun()
        return
    by_word = st.toggle("By word", key=f"{PREFIX}.by_word")
    moved = movements(shown.changes, by_word=by_word)
    figure = movement_figure(moved, before.model_label, after.model_label, MOVED)
    st.plotly_chart(figure, key=f"{PREFIX}.moved.{by_word}")
    skipped = f" · {count(shown.split_differently, 'item')} left out: the two split the " \
              "reference differently" if shown.split_differently else ""
    st.caption(f"{count(len(shown.changes), 'reference')} scored · {len(moved)} distinct "
               f"{'words' if by_word else 'tokens'} · the {MOVED} that rose most and the "
               f"{MOVED} that fell most, each with how often it came{skipped}.")


def _score_all(dataset: Dataset, before: RunSummary, after: RunSummary,
               comparison: CheckpointComparison, run_engines: _RunEngines
               ) -> DatasetReferences | None:
    engines = [run_engines.of(before), run_engines.of(after)]
    if None in engines:
        st.error("Both checkpoints must be local models this server can load.")
        return None
    items = items_by_id(dataset)
    template = Template.of_run(before.settings)
    bar = st.progress(0.0, text="Scoring the references…")
    changes, split = [], 0
    for n, item_id in enumerate(comparison.item_ids, 1):
        change = reference_change(item_id, *(score_reference(e, items[item_id], template)
                                             for e in engines))
        if change is None:
            split += 1
        else:
            changes.append(change)
        bar.progress(n / len(comparison.item_ids),
                     text=f"{n:,} of {len(comparison.item_ids):,} references scored")
    return DatasetReferences(before.id, after.id, tuple(changes), split)

