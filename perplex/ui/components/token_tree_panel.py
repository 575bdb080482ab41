"""A token tree under the transcript, grown from a token's menu.

Its leaves can be finished and grouped by meaning, and any node continued as a branch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import visible_token
from perplex.core.records import DecodeParams, Generation, TokenStep
from perplex.engine.protocol import Engine
from perplex.lens.token_tree import TokenTree, token_tree, tree_figure
from perplex.modes.hallucination import judged_same
from perplex.modes.semantic_entropy import (
    EXACT_FIRST_SENTENCE,
    SemanticEntropy,
    finish_leaves,
    semantic_entropy,
)
from perplex.ui.components.branching import continue_as_branch
from perplex.ui.components.model_ids import in_order, model_ids
from perplex.ui.shell.session_panel import read_only
from perplex.ui.shell.text import count, plain

TREE_SUFFIX = ".tree"
GROUPINGS = {"exact": EXACT_FIRST_SENTENCE,
             "judge": "the sidebar's model as judge (asked both ways round)"}


@dataclass(frozen=True)
class ShownTree:
    """The tree a page shows, at token `position` of generation `generation_id`."""

    generation_id: str
    position: int
    tree: TokenTree
    meaning: SemanticEntropy | None = None
    version: int = 0  # a new chart (its selection cleared) after a node was continued


def build_tree(step: TokenStep, gen: Generation, page_key: str, engine: Engine | None,
               top_k: int = 3, depth: int = 3, min_path: float = 0.01) -> None:
    """Grow the tree at `step` with a progress bar, and show it under `page_key`."""
    ids = model_ids(gen, engine, "grow a token tree", "the tree")
    if ids is None:
        return
    context = ids[:step.position]
    bar = st.progress(0.0, text=f"Expanding the alternatives at token {step.position}…")
    try:
        tree = token_tree(engine, context, top_k, depth, min_path, progress=lambda done, of:
                          bar.progress(done / of, text=f"Level {done} of {of} expanded"))
    except PerplexError as exc:
        bar.empty()
        st.error(plain(str(exc)))
        return
    st.session_state[page_key + TREE_SUFFIX] = ShownTree(gen.id, step.position, tree)
    st.rerun()


def tree_panel(page_key: str, gen: Generation | None, engine: Engine | None,
               params: DecodeParams) -> None:
    """The tree of the generation on screen: figure, settings, answers, branching."""
    shown = st.session_state.get(page_key + TREE_SUFFIX)
    if gen is None or not isinstance(shown, ShownTree) or shown.generation_id != gen.id:
        return
    step = in_order(gen)[shown.position]
    tree = shown.tree
    token = visible_token(step.text)
    with st.expander(f"Token tree at “{token}” (token {shown.position})", expanded=True):
        st.caption(
            f"The {tree.top_k} likeliest tokens at each step whose path probability is at "
            f"least {tree.min_path:g}, {tree.depth} steps deep: {count(len(tree.nodes), 'node')}"
            f", {len(tree.leaves())} of them leaves (dark). Edge labels: each step's p; "
            f"hover a node for its path p. The leaves cover p = {tree.covered_mass:.4f} of "
            f"what the model may write here; entropy at the root {tree.root_entropy:.3f} "
            "nats. Click a node to continue its path as a branch.")
        _settings(page_key, step, gen, engine, tree)
        picked = st.plotly_chart(tree_figure(tree, f"Alternatives at token {shown.position}"),
                                 on_select="rerun", selection_mode="points",
                                 key=f"{page_key}.tree_figure.{shown.version}")
        node = _picked_node(picked)
        if node is not None:
            _continue(page_key, gen, step, shown, node, engine, params)
        _meaning(page_key, gen, shown, engine, params)
        if st.button("Close the tree", key=f"{page_key}.tree_close"):
            del st.session_state[page_key + TREE_SUFFIX]
            st.rerun()


def _settings(page_key: str, step: TokenStep, gen: Generation, engine, tree: TokenTree) -> None:
    cols = st.columns(4)
    top_k = cols[0].number_input("alternatives per step", 1, 10, tree.top_k,
                                 key=f"{page_key}.tree_k")
    depth = cols[1].number_input("depth (tokens)", 1, 8, tree.depth, key=f"{page_key}.tree_depth")
    cut = cols[2].number_input("cut-off (path p)", 0.0, 0.99, tree.min_path, step=0.005,
                               format="%.3f", key=f"{page_key}.tree_cut")
    if cols[3].button("Grow again", key=f"{page_key}.tree_grow"):
        build_tree(step, gen, page_key, engine, int(top_k), int(depth), float(cut))


def _picked_node(picked) -> int | None:
    points = (picked or {}).get("selection", {}).get("points", []) if picked else []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and data and isinstance(data[0], (int, float)):
            return int(data[0])
    return None


def _continue(page_key: str, gen: Generation, step: TokenStep, shown: ShownTree, node: int,
              engine, params: DecodeParams) -> None:
    if read_only():
        st.warning("This session is open read-only (shared link): fork it to make changes.")
        return
    path = shown.tree.path_text(node)
    st.caption(f"Continuing “{plain(visible_token(path))}” as a branch…")
    try:
        continue_as_branch(gen, step, shown.tree.path_ids(node),
                           f"tree path “{path}” at #{shown.position}", page_key, engine, params)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    st.session_state[page_key + TREE_SUFFIX] = replace(shown, version=shown.version + 1)
    st.rerun()


def _meaning(page_key: str, gen: Generation, shown: ShownTree, engine, params) -> None:
    cols = st.columns([2, 1])
    grouping = cols[0].radio("Group the answers by", list(GROUPINGS), format_func=GROUPINGS.get,
                             horizontal=True, key=f"{page_key}.tree_grouping")
    if cols[1].button("Finish the leaves into answers", key=f"{page_key}.tree_finish"):
        bar = st.progress(0.0, text="Finishing the leaves…")
        try:
            leaves = finish_leaves(engine, gen, shown.position, shown.tree, params,
                                   progress=lambda done, of: bar.progress(
                                       done / of, text=f"{done} of {of} leaves finished"))
            same = judged_same(engine, gen.last_user_text) if grouping == "judge" else None
            meaning = semantic_entropy(leaves, same, EXACT_FIRST_SENTENCE if same is None
                                       else f"judged by {engine.info.label}, both ways round")
        except PerplexError as exc:
            bar.empty()
            st.error(plain(str(exc)))
            return
        st.session_state[page_key + TREE_SUFFIX] = replace(shown, meaning=meaning)
        st.rerun()
    if shown.meaning is not None:
        _answers(shown)


def _answers(shown: ShownTree) -> None:
    meaning = shown.meaning
    st.markdown(f"**Semantic entropy {meaning.entropy:.3f} nats** over "
                f"{count(len(meaning.groups), 'meaning')} · token entropy at the root "
                f"{shown.tree.root_entropy:.3f} nats")
    st.caption(f"Each leaf finished greedily; an answer's p is that of its tokens from the "
               f"root on. The {count(len(meaning.leaves), 'answer')} cover p = "
               f"{meaning.covered:.4f}; a meaning's share is of that. Grouped by "
               f"{plain(meaning.grouping)}.")
    rows = []
    for g, (members, share) in enumerate(zip(meaning.groups, meaning.group_probs), 1):
        for i in members:
            leaf = meaning.leaves[i]
            rows.append({"meaning": g, "share": share,
                         "path": visible_token(shown.tree.path_text(leaf.node)),
                         "answer": leaf.answer, "p": leaf.prob})
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        "share": st.column_config.NumberColumn(format="%.3f"),
        "p": st.column_config.NumberColumn(format="%.2e")})
