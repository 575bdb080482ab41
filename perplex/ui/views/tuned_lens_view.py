"""The Logit Lens page's tuned lens: which lens reads the layers, and training one.

Training keeps its translators in the session as it goes, so Stop (any rerun) loses no
step: a stopped training is evaluated and stored like a finished one.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.engine.protocol import Engine
from perplex.lens import tuned_lens
from perplex.lens.logit_lens import LogitLens
from perplex.lens.plots import held_out_kl_figure, lock_in_figure
from perplex.ui.shell import resources
from perplex.ui.shell.text import plain
from perplex.ui.views.logit_lens_view import PREFIX

KIND_KEY = f"{PREFIX}.kind"
TRAINING_KEY = f"{PREFIX}.tuned_training"  # (model spec, tuned_lens.Training)
RUNNING_KEY = f"{PREFIX}.tuned_running"  # the model spec being trained, while it runs
STOP_KEY = f"{PREFIX}.tuned_stop"
KINDS = ("logit lens", "tuned lens")
DEFAULT_STEPS = 60
EVAL_WINDOWS = 4  # held-out windows the stored KL per layer is measured on


def chosen_lens(local: Engine) -> tuned_lens.TunedLens | None:
    """The lens the layers are read with: None for the logit lens (or while none is trained)."""
    try:
        local.unembedding  # a model without one: the lens below says so, nothing to tune
    except PerplexError:
        return None
    home = resources.settings().home
    try:
        stored = tuned_lens.load(home, local.info.spec)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        stored = None
    kind = st.radio("Read the layers with", KINDS, horizontal=True, key=KIND_KEY,
                    help="The tuned lens reads each layer through an affine translator "
                         "trained to match the output (Belrose et al., 2023).")
    with st.expander(f"Tuned lens of {local.info.label}",
                     expanded=kind == KINDS[1] and stored is None
                     or st.session_state.get(RUNNING_KEY) is not None):
        stored = _training(local, home, stored)
    if kind == KINDS[1] and stored is None:
        st.info("No tuned lens for this model yet: train one above. The logit lens is shown.")
    return stored if kind == KINDS[1] else None


def _training(local: Engine, home, stored: tuned_lens.TunedLens | None):
    spec = local.info.spec
    if st.session_state.get(RUNNING_KEY) == spec:
        if st.session_state.pop(STOP_KEY, False):
            stored = _store(local, home, "Stopped")
        else:
            _train(local, home)
    if stored is not None:
        _describe(stored)
    else:
        st.caption("Translators for every layer, trained on text the project ships (the "
                   "README and the calibration questions; every 8th window held out), "
                   "stored with the model's spec under the Perplex home.")
    steps = st.number_input("training steps (64 positions × every layer each)", 1, 2000,
                            DEFAULT_STEPS, key=f"{PREFIX}.tuned_steps")
    if st.button("Train again" if stored is not None else "Train the tuned lens",
                 key=f"{PREFIX}.tuned_train"):
        st.session_state.pop(TRAINING_KEY, None)
        st.session_state[RUNNING_KEY] = spec
        st.session_state[f"{PREFIX}.tuned_goal"] = int(steps)
        st.rerun()
    return stored


def _train(local: Engine, home) -> None:
    goal = st.session_state.get(f"{PREFIX}.tuned_goal", DEFAULT_STEPS)
    kept = st.session_state.get(TRAINING_KEY)
    st.button("Stop", key=f"{PREFIX}.tuned_stop_button", on_click=st.session_state.__setitem__,
              args=(STOP_KEY, True), help="Stop training here; the steps done are kept.")
    if kept is None or kept[0] != local.info.spec:
        with st.spinner("Reading every layer of the training text (one pass per window)…"):
            kept = (local.info.spec, tuned_lens.Training(
                local, tuned_lens.windows(local, tuned_lens.corpus_texts())[0]))
        st.session_state[TRAINING_KEY] = kept
    training = kept[1]
    bar = st.progress(training.steps / goal, text="Training…")

    def show(done: int, total: int, kl: float) -> None:
        left = training.seconds / done * (total - done)
        bar.progress(done / total, text=f"Step {done} of {total} · mean KL over the layers "
                                        f"{kl:.3f} nats · about {left:.0f} s left")

    tuned_lens.train(local, goal, progress=show, training=training)
    _store(local, home, "Trained")
    st.rerun()


def _store(local: Engine, home, how: str):
    """Evaluate and store the translators trained so far; the training ends."""
    st.session_state.pop(RUNNING_KEY, None)
    kept = st.session_state.pop(TRAINING_KEY, None)
    if kept is None or kept[1].steps == 0:
        st.caption("Stopped before the first step: nothing to keep.")
        return tuned_lens.load(home, local.info.spec)
    held = tuned_lens.windows(local, tuned_lens.corpus_texts())[1][:EVAL_WINDOWS]
    with st.spinner("Measuring both lenses on the held-out text…"):
        lens = tuned_lens.evaluated(local, kept[1].lens(), held)
    tuned_lens.save(lens, home)
    st.caption(f"{how} after {lens.steps} steps: stored.")
    return lens


def _describe(lens: tuned_lens.TunedLens) -> None:
    base, tuned = (np.array(k) for k in lens.held_out_kl)
    line = (f"Trained {lens.steps} steps on {lens.tokens:,} tokens in {lens.seconds:.0f} s.")
    if len(base) and len(base) == len(tuned):
        better = int((tuned[:-1] < base[:-1]).sum())
        worse = [str(i) for i in np.flatnonzero(tuned[:-1] >= base[:-1])]
        line += (f" On held-out text the tuned lens is closer to the output at {better} of "
                 f"{len(base) - 1} layers" + (f" (not at layer {', '.join(worse)})" if worse
                                               else "") + f"; mean KL {tuned[:-1].mean():.2f} "
                 f"vs {base[:-1].mean():.2f} nats for the logit lens.")
        st.plotly_chart(held_out_kl_figure(base, tuned), key=f"{PREFIX}.tuned_kl")
    st.caption(line)


def lock_in_comparison(logit: LogitLens, tuned: LogitLens) -> None:
    """Both lenses' lock-in layers, position by position."""
    st.plotly_chart(lock_in_figure(logit, tuned), key=f"{PREFIX}.lock_in_both")
    last = min(logit.n_positions, tuned.n_positions) - 1
    st.caption(f"Lock-in at the last position: layer {int(logit.lock_in[last])} (logit lens) "
               f"vs {int(tuned.lock_in[last])} (tuned lens); median over positions "
               f"{int(np.median(logit.lock_in))} vs {int(np.median(tuned.lock_in))}.")
