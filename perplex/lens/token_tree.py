"""A token tree: the top-k alternatives at a position, expanded step by step.

From the context before a token, the next-token distribution gives the root's children:
its `top_k` most probable tokens whose path probability reaches `min_path` (the cut-off).
Each child is expanded the same way, one padded batch per depth, until `depth` or until
no child reaches the cut-off. A path's probability is the product of its steps'
probabilities (each the softmax of the raw logits, temperature 1), and the mass the tree
covers is the sum over its leaves: the leaves are prefix-free, so that sum is the
probability that the model's next tokens begin with one of the leaf paths.

A node whose token ends the turn (an end-of-sequence id) is a leaf: nothing follows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from perplex.core.errors import InputFormatError
from perplex.core.plots import figure_text, figure_token, short_prob

MAX_TOP_K = 10
MAX_DEPTH = 8
MAX_NODES = 400  # a level that would pass this is refused: its cost grows as k ** depth
MAX_CONTEXT = 2048


@dataclass(frozen=True)
class TreeNode:
    """One token of the tree; `parent` is a node index, -1 for the root's children."""

    token_id: int
    text: str
    prob: float  # given its parent's path
    path_prob: float  # the product of the probabilities from the root down to here
    depth: int  # 1 for the root's children
    parent: int
    ends: bool = False  # an end-of-sequence token: a leaf whatever the depth


@dataclass(frozen=True)
class TokenTree:
    """The tree after `context`: nodes breadth first, with what it was built with."""

    context: tuple[int, ...]
    nodes: tuple[TreeNode, ...]
    root_entropy: float  # nats, of the full distribution at the root
    top_k: int
    depth: int
    min_path: float

    def children(self, index: int) -> list[int]:
        """Indices of the nodes whose parent is `index` (-1: the root)."""
        return [i for i, n in enumerate(self.nodes) if n.parent == index]

    def leaves(self) -> list[int]:
        """Indices of the nodes without children, in breadth-first order."""
        parents = {n.parent for n in self.nodes}
        return [i for i in range(len(self.nodes)) if i not in parents]

    def path(self, index: int) -> list[int]:
        """Node indices from the root's child down to `index`."""
        found = []
        while index >= 0:
            found.append(index)
            index = self.nodes[index].parent
        return found[::-1]

    def path_ids(self, index: int) -> tuple[int, ...]:
        """The token ids of the path to `index`."""
        return tuple(self.nodes[i].token_id for i in self.path(index))

    def path_text(self, index: int) -> str:
        """The text of the path to `index`."""
        return "".join(self.nodes[i].text for i in self.path(index))

    @property
    def covered_mass(self) -> float:
        """The probability that the next tokens begin with one of the leaf paths."""
        return math.fsum(self.nodes[i].path_prob for i in self.leaves())


def check_tree(top_k: int, depth: int, min_path: float) -> None:
    """Refuse a tree that cannot be drawn or would cost too much, saying why."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise InputFormatError(f"Choose between 1 and {MAX_TOP_K} alternatives per step.")
    if not 1 <= depth <= MAX_DEPTH:
        raise InputFormatError(f"Choose a depth between 1 and {MAX_DEPTH} tokens.")
    if not 0.0 <= min_path < 1.0 or not math.isfinite(min_path):
        raise InputFormatError("The cut-off is a path probability from 0 up to (not) 1.")


def token_tree(engine, context: Sequence[int], top_k: int = 3, depth: int = 3,
               min_path: float = 0.01,
               progress: Callable[[int, int], None] | None = None) -> TokenTree:
    """Expand the alternatives after `context` (capability `full_distribution`).

    `progress(depth done, depth)` after each level.
    """
    check_tree(top_k, depth, min_path)
    engine.capabilities.require("full_distribution", engine.info.label)
    if not context:
        raise InputFormatError("The tree needs at least one token before it.")
    if len(context) + depth > MAX_CONTEXT:
        raise InputFormatError(f"The context has {len(context)} tokens; the tree reads at "
                               f"most {MAX_CONTEXT} (each level is a pass over all of it).")
    eos = set(engine.info.eos_ids)
    context = tuple(context)
    root = engine.next_token_probs([context])[0]
    nodes: list[TreeNode] = []
    frontier = [(-1, 1.0, root)]  # (node index, its path probability, its distribution)
    for level in range(1, depth + 1):
        grown = [(parent, _node(engine, token, dist, path, level, parent, eos))
                 for parent, path, dist in frontier for token in _top(dist, top_k)]
        grown = [(parent, node) for parent, node in grown if node.path_prob >= min_path]
        if len(nodes) + len(grown) > MAX_NODES:
            raise InputFormatError(f"Level {level} would take the tree past {MAX_NODES} "
                                   "nodes: choose fewer alternatives, less depth or a higher "
                                   "cut-off.")
        start = len(nodes)
        nodes.extend(node for _, node in grown)
        if progress is not None:
            progress(level, depth)
        open_ = [start + i for i, (_, node) in enumerate(grown) if not node.ends]
        if level == depth or not open_:
            break
        ids = [context + _path_ids(nodes, i) for i in open_]
        dists = engine.next_token_probs(ids)
        frontier = [(i, nodes[i].path_prob, d) for i, d in zip(open_, dists)]
    return TokenTree(context, tuple(nodes), _entropy(root), top_k, depth, min_path)


def _top(dist: np.ndarray, k: int) -> list[int]:
    """The k most probable token ids, most probable first (ties: the lower id)."""
    order = np.lexsort((np.arange(len(dist)), -dist))
    return [int(t) for t in order[:k]]


def _node(engine, token: int, dist: np.ndarray, path: float, depth: int, parent: int,
          eos: set[int]) -> TreeNode:
    prob = float(dist[token])
    return TreeNode(token, engine.decode([token]), prob, path * prob, depth, parent,
                    token in eos)


def _path_ids(nodes: Sequence[TreeNode], index: int) -> tuple[int, ...]:
    found = []
    while index >= 0:
        found.append(nodes[index].token_id)
        index = nodes[index].parent
    return tuple(found[::-1])


def _entropy(dist: np.ndarray) -> float:
    p = dist[dist > 0]
    return float(-(p * np.log(p)).sum())


def tree_figure(tree: TokenTree, title: str) -> go.Figure:
    """The tree left to right: each node its token and path p, each edge its step p.

    Leaves are spaced evenly down the page and a parent sits at its children's mean, so
    no edges cross. Every node marker carries its index in `customdata` (a click picks it).
    """
    y: dict[int, float] = {}
    for slot, leaf in enumerate(_leaves_in_order(tree)):
        y[leaf] = -slot
    for i in sorted(range(len(tree.nodes)), key=lambda i: -tree.nodes[i].depth):
        below = tree.children(i)
        if below:
            y[i] = sum(y[c] for c in below) / len(below)
    root_y = sum(y[c] for c in tree.children(-1)) / max(1, len(tree.children(-1)))
    fig = go.Figure()
    edge_x, edge_y, mid_x, mid_y, mid_text = [], [], [], [], []
    for i, node in enumerate(tree.nodes):
        px, py = (0, root_y) if node.parent < 0 else (tree.nodes[node.parent].depth,
                                                      y[node.parent])
        edge_x += [px, node.depth, None]
        edge_y += [py, y[i], None]
        mid_x.append((px + node.depth) / 2)
        mid_y.append((py + y[i]) / 2)
        mid_text.append(short_prob(node.prob))
    fig.add_trace(go.Scatter(x=edge_x, y=edge_y, mode="lines", hoverinfo="skip",
                             line=dict(color="#bbb", width=1), showlegend=False))
    fig.add_trace(go.Scatter(x=mid_x, y=mid_y, mode="text", text=mid_text, hoverinfo="skip",
                             textfont=dict(size=10, color="#888"), showlegend=False))
    leaves = set(tree.leaves())
    fig.add_trace(go.Scatter(
        x=[n.depth for n in tree.nodes], y=[y[i] for i in range(len(tree.nodes))],
        mode="markers+text", textposition="middle right", showlegend=False,
        text=[figure_token(n.text) for n in tree.nodes],
        marker=dict(size=[8 + 22 * math.sqrt(n.path_prob) for n in tree.nodes],
                    color=["#2b7bba" if i in leaves else "#9ecae1"
                           for i in range(len(tree.nodes))],
                    line=dict(color="#08306b", width=1)),
        customdata=[[i, n.prob, n.path_prob, figure_text(tree.path_text(i))]
                    for i, n in enumerate(tree.nodes)],
        hovertemplate=("“%{customdata[3]}”<br>step p %{customdata[1]:.4f} · path p "
                       "%{customdata[2]:.4f}<extra></extra>")))
    fig.add_trace(go.Scatter(x=[0], y=[root_y], mode="markers+text", text=["root"],
                             textposition="middle left", hoverinfo="skip", showlegend=False,
                             marker=dict(size=10, color="#555")))
    fig.update_layout(height=max(260, 30 * len(leaves) + 80), margin=dict(l=10, r=10, t=40,
                                                                          b=10),
                      title=dict(text=figure_text(title), font=dict(size=13)),
                      xaxis=dict(title="tokens after the root", dtick=1,
                                 range=[-0.4, tree.depth + 0.9]),
                      yaxis=dict(visible=False), clickmode="event+select", dragmode=False)
    return fig


def _leaves_in_order(tree: TokenTree) -> list[int]:
    """Leaves top to bottom: depth first, most probable child first."""
    order: list[int] = []

    def walk(index: int) -> None:
        below = sorted(tree.children(index), key=lambda c: -tree.nodes[c].prob)
        if not below and index >= 0:
            order.append(index)
        for child in below:
            walk(child)
    walk(-1)
    return order
