"""The token tree against a tree grown by hand from plain forward passes; semantic entropy.

The reference tree below is built the slow way: one unpadded pass per node over its whole
context, float64 softmax of the logits. The engine's tree pads each level into one batch,
so the two are different passes: float32's bound on each step probability, not equality.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perplex.core.errors import InputFormatError
from perplex.core.records import DecodeParams, Message
from perplex.core.tokens import encode_plain_text
from perplex.engine.registry import local_engine
from perplex.lens.token_tree import MAX_NODES, token_tree, tree_figure
from perplex.modes.semantic_entropy import (
    EXACT_FIRST_SENTENCE,
    FinishedLeaf,
    finish_leaves,
    semantic_entropy,
)
from tests.tolerances import FLOAT32_NATS, FLOAT32_PROB


def _direct_probs(lm, ids) -> np.ndarray:
    with torch.no_grad():
        logits = lm.model(torch.tensor([list(ids)])).logits[0, -1].double()
    return torch.softmax(logits, -1).numpy()


def _reference_tree(lm, context, top_k, depth, min_path):
    """[(path ids, step p, path p)] breadth first, by the rules in `lens.token_tree`."""
    found, frontier = [], [((), 1.0)]
    for _ in range(depth):
        level = []
        for path, p_path in frontier:
            probs = _direct_probs(lm, tuple(context) + path)
            order = sorted(range(len(probs)), key=lambda t: (-probs[t], t))[:top_k]
            level += [(path + (t,), probs[t], p_path * probs[t]) for t in order
                      if p_path * probs[t] >= min_path]
        found += level
        frontier = [(path, p) for path, _, p in level]
    return found


@pytest.mark.parametrize("min_path", [0.0, "median"])
def test_paths_are_products_of_direct_step_probabilities(tiny_lm, min_path):
    engine = local_engine(tiny_lm)
    context = list(encode_plain_text(tiny_lm.tokenizer, "The capital of France").ids)
    if min_path == "median":  # a cut-off that prunes about half of the second level
        second = [p for path, _, p in _reference_tree(tiny_lm, context, 3, 2, 0.0)
                  if len(path) == 2]
        min_path = float(np.median(second))
    tree = token_tree(engine, context, top_k=3, depth=3, min_path=min_path)
    expected = _reference_tree(tiny_lm, context, 3, 3, min_path)
    assert [tree.path_ids(i) for i in range(len(tree.nodes))] == [p for p, _, _ in expected]
    for node, (_, step, path) in zip(tree.nodes, expected):
        assert node.prob == pytest.approx(step, abs=FLOAT32_PROB)
        assert node.path_prob == pytest.approx(path, abs=3 * FLOAT32_PROB)
        # a path's probability is the product of its own steps, exactly
        steps = [tree.nodes[i].prob for i in tree.path(tree.nodes.index(node))]
        assert node.path_prob == pytest.approx(math.prod(steps), rel=1e-12)
    leaves = [p for p, _, _ in expected if not any(q[:len(p)] == p and len(q) > len(p)
                                                    for q, _, _ in expected)]
    mass = sum(p for path, _, p in expected if path in leaves)
    assert tree.covered_mass == pytest.approx(mass, abs=len(leaves) * 3 * FLOAT32_PROB)
    assert sorted(tree.path_ids(i) for i in tree.leaves()) == sorted(leaves)
    root = _direct_probs(tiny_lm, context)
    assert tree.root_entropy == pytest.approx(-(root * np.log(root)).sum(), abs=FLOAT32_NATS)
    figure = tree_figure(tree, "tree")
    assert [d[0] for d in figure.data[2].customdata] == list(range(len(tree.nodes)))


def test_the_tree_refuses_what_it_cannot_draw(tiny_lm):
    engine = local_engine(tiny_lm)
    with pytest.raises(InputFormatError, match="between 1 and 10 alternatives"):
        token_tree(engine, [1, 2], top_k=11)
    with pytest.raises(InputFormatError, match="depth between 1 and 8"):
        token_tree(engine, [1, 2], depth=0)
    with pytest.raises(InputFormatError, match="cut-off"):
        token_tree(engine, [1, 2], min_path=1.0)
    with pytest.raises(InputFormatError, match=f"past {MAX_NODES} nodes"):
        token_tree(engine, [1, 2], top_k=10, depth=3, min_path=0.0)


def test_semantic_entropy_on_answers_grouped_by_hand():
    leaves = [FinishedLeaf(0, "Paris", math.log(0.4)),
              FinishedLeaf(1, "paris. It is in France.", math.log(0.2)),
              FinishedLeaf(2, "Lyon", math.log(0.1)), FinishedLeaf(3, "The Lyon", math.log(0.1))]
    found = semantic_entropy(leaves)  # first sentences: "paris", "paris", "lyon", "lyon"
    assert found.grouping == EXACT_FIRST_SENTENCE
    assert found.groups == ((0, 1), (2, 3))
    assert found.group_probs == pytest.approx((0.75, 0.25))
    assert found.entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert found.covered == pytest.approx(0.8)
    # a judge that hears "Lyon" and "Paris" as one city puts all four in one group
    one = semantic_entropy(leaves, same=lambda a, b: True, grouping="judge: any")
    assert one.groups == ((0, 1, 2, 3),) and one.entropy == 0.0
    # answers of tiny probability share out without underflow
    tiny = [FinishedLeaf(i, text, -2000.0 - i) for i, text in enumerate(("a", "b"))]
    assert semantic_entropy(tiny).group_probs == pytest.approx(
        (1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))))


@pytest.mark.slow
def test_finished_leaves_are_scored_as_a_plain_pass_scores_them(bundled_lm):
    engine = local_engine(bundled_lm)
    messages = (Message("user", "What is the capital of France?"),)
    gen = engine.generate(messages, DecodeParams(max_new_tokens=8)).run()
    response = [s for s in gen.steps if s.role.name == "RESPONSE"]
    position = response[0].position
    context = [s.token_id for s in gen.steps[:position]]
    tree = token_tree(engine, context, top_k=2, depth=2, min_path=0.02)
    finished = finish_leaves(engine, gen, position, tree, DecodeParams(max_new_tokens=6))
    assert [f.node for f in finished] == tree.leaves()
    for leaf in finished:
        run = engine.inject(gen, position, tree.path_ids(leaf.node),
                            DecodeParams(max_new_tokens=6)).run()
        ids = [s.token_id for s in run.steps]
        assert tuple(ids[position:position + tree.nodes[leaf.node].depth]) == \
            tree.path_ids(leaf.node)
        with torch.no_grad():
            logits = bundled_lm.model(torch.tensor([ids])).logits[0].double()
        direct = sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item()
                     for t in range(position, len(ids)))
        # the run's records (a cached decode) against one plain pass over the same tokens
        assert leaf.logprob == pytest.approx(direct, abs=len(ids) * FLOAT32_NATS)
        assert leaf.answer.startswith(tree.path_text(leaf.node).strip()[:1])


def test_a_forced_path_ending_the_turn_stops_there(bundled_lm):
    engine = local_engine(bundled_lm)
    gen = engine.generate((Message("user", "Say yes."),), DecodeParams(max_new_tokens=4)).run()
    position = next(s.position for s in gen.steps if s.role.name == "RESPONSE")
    eos = min(engine.info.eos_ids)
    yes = engine.encode((Message("text", "Yes"),), False).ids[-1]
    run = engine.inject(gen, position, (yes, eos), DecodeParams(max_new_tokens=4)).run()
    assert [s.token_id for s in run.steps[position:]] == [yes, eos]
    assert run.stop_reason == "eos"
