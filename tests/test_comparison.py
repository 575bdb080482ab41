"""Comparison mode: cross-scoring against direct computations, divergence points, pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perplex.core.divergence import first_divergence, full_divergence, top_k_divergence
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole
from perplex.engine.local.engine import LocalEngine
from perplex.engine.local.models import LoadedModel, ModelSpec
from perplex.modes.comparison.cross import Side, answer_ids, cross_score
from perplex.modes.comparison.pair import divergence_summary, finish_pair, pair_stats
from perplex.modes.comparison.pairing import PairingError, check_pair
from tests.tiny import tiny_model
from tests.tolerances import FLOAT32_NATS, FLOAT32_PROB, SAME_LOGITS

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny_pair():
    """Two different random tiny models sharing one tokenizer."""
    return LocalEngine(tiny_model(seed=0)), LocalEngine(tiny_model(seed=1))


def direct_divergences(logits_a: np.ndarray, logits_b: np.ndarray):
    """KL(A‖B), KL(B‖A), JS per row, by the textbook formulas in float64 numpy."""
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    la, lb = log_softmax(logits_a.astype(np.float64)), log_softmax(logits_b.astype(np.float64))
    pa, pb = np.exp(la), np.exp(lb)
    m = (pa + pb) / 2
    kl = lambda p, lp, lq: (p * (lp - lq)).sum(axis=-1)  # noqa: E731
    return kl(pa, la, lb), kl(pb, lb, la), 0.5 * kl(pa, la, np.log(m)) + 0.5 * kl(pb, lb, np.log(m))


def forced(side: Side, ids: list[int]) -> Generation:
    """A generation of `side` whose answer is the token ids `ids` (teacher-forced)."""
    seq = side.prompt_sequence(PROMPT).extended(ids, TokenRole.RESPONSE,
                                                len(side.messages(PROMPT)))
    steps = side.engine.score_sequence(seq).steps
    text = "".join(s.text for s in steps[len(steps) - len(ids):])
    return Generation(steps=steps, messages=(*side.messages(PROMPT), Message("assistant", text)),
                      model_label=side.engine.info.label, source=Source.SCORED)


def check_against_direct(a: LocalEngine, b: LocalEngine, side_a: Side, side_b: Side,
                         ids: list[int]) -> None:
    cross = cross_score(side_a, side_b, PROMPT, forced(side_a, ids), "A")
    n = len(ids)
    rows = {}
    for name, side, engine in (("a", side_a, a), ("b", side_b, b)):
        full = list(side.prompt_sequence(PROMPT).ids) + ids
        with torch.no_grad():  # an independent forward pass of the plain model
            logits = engine.lm.model(torch.tensor([full])).logits[0].double().numpy()
        rows[name] = logits[len(full) - n - 1:-1]
    kl_ab, kl_ba, js = direct_divergences(rows["a"], rows["b"])
    for t in cross.tokens:
        # Two forward passes of one model on the same tokens: float32 reduction order.
        assert abs(t.kl_ab - kl_ab[t.index]) <= FLOAT32_NATS
        assert abs(t.kl_ba - kl_ba[t.index]) <= FLOAT32_NATS
        assert abs(t.js - js[t.index]) <= FLOAT32_NATS
        for name, logprob in (("a", t.logprob_a), ("b", t.logprob_b)):
            z = rows[name][t.index]
            direct = z[ids[t.index]] - z.max() - math.log(np.exp(z - z.max()).sum())
            assert abs(math.exp(logprob) - math.exp(direct)) <= FLOAT32_PROB
        assert t.rank_a == int((rows["a"][t.index] > rows["a"][t.index][ids[t.index]]).sum()) + 1
    assert all(t.js > 0 for t in cross.tokens)  # two different models: they do differ


def test_cross_scores_equal_a_direct_computation_on_the_tiny_pair(tiny_pair):
    a, b = tiny_pair
    ids = a.lm.tokenizer.encode(" Paris, France. Hello world!")
    check_against_direct(a, b, Side("A", a), Side("B", b, "Answer in one word."), ids)
    check_against_direct(a, b, Side("A", a, "Be brief."), Side("B", b), ids)


def test_full_divergence_is_exact_for_the_same_logits():
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(3)) * 4
    found = full_divergence(logits, logits.clone())
    assert found.kl_ab == found.kl_ba == found.js == [SAME_LOGITS] * 5


def test_a_model_compared_with_itself_diverges_nowhere(tiny_pair):
    a, _ = tiny_pair
    side = Side("A", a)
    gen = a.generate(side.messages(PROMPT), DecodeParams(max_new_tokens=12)).run()
    run = finish_pair(side, Side("B", a), PROMPT, gen, gen)
    assert run.first_divergence is None
    for cross in (run.cross_a, run.cross_b):
        # One model, one input, one process: the two passes give the same logits.
        assert [t.kl_ab for t in cross.tokens] == [SAME_LOGITS] * len(cross.tokens)
        assert all(t.js == SAME_LOGITS and t.log_ratio == SAME_LOGITS for t in cross.tokens)
    assert "identical" in divergence_summary(run)


def test_first_divergence_is_the_first_differing_greedy_token(tiny_pair):
    a, b = tiny_pair
    side_a, side_b = Side("A", a), Side("B", b)
    greedy = []
    for engine, side in ((a, side_a), (b, side_b)):  # plain greedy decoding by transformers
        ids = torch.tensor([list(side.prompt_sequence(PROMPT).ids)])
        out = engine.lm.model.generate(ids, max_new_tokens=10, do_sample=False,
                                       eos_token_id=None, pad_token_id=0)
        greedy.append(out[0, ids.shape[1]:].tolist())
    expected = next(i for i, (x, y) in enumerate(zip(*greedy)) if x != y)
    gen_a = a.generate(side_a.messages(PROMPT), DecodeParams(max_new_tokens=10)).run()
    gen_b = b.generate(side_b.messages(PROMPT), DecodeParams(max_new_tokens=10)).run()
    assert answer_ids(gen_a)[:expected + 1] == greedy[0][:expected + 1]
    run = finish_pair(side_a, side_b, PROMPT, gen_a, gen_b)
    assert run.first_divergence == expected
    assert f"diverge at token {expected}:" in divergence_summary(run)


def test_first_divergence_by_hand():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 7]) == 2  # one answer ends first


def test_top_k_bounds_never_exceed_the_true_divergence_and_are_exact_when_all_is_known():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p, q = rng.dirichlet(np.ones(12) * 0.3), rng.dirichlet(np.ones(12) * 0.3)
        true = (float((p * np.log(p / q)).sum()), float((q * np.log(q / p)).sum()))
        m = (p + q) / 2
        true_js = 0.5 * float((p * np.log(p / m)).sum()) + 0.5 * float((q * np.log(q / m)).sum())
        top_p = {i: math.log(p[i]) for i in np.argsort(-p)[:4]}
        top_q = {i: math.log(q[i]) for i in np.argsort(-q)[:4]}
        kl_pq, kl_qp, js = top_k_divergence(top_p, top_q)
        assert kl_pq <= true[0] + 1e-12 and kl_qp <= true[1] + 1e-12 and js <= true_js + 1e-12
        everything = top_k_divergence({i: math.log(p[i]) for i in range(12)},
                                      {i: math.log(q[i]) for i in range(12)})
        assert everything == pytest.approx((*true, true_js), abs=1e-9)


def test_a_top_k_side_gives_labelled_bounds(tiny_pair):
    a, b = tiny_pair

    class TopKOnly:  # the local engine, its logits withheld as an API withholds them
        def __init__(self, engine):
            self.engine = engine
            self.info, self.capabilities = engine.info, engine.capabilities

        def encode(self, *args, **kwargs):
            return self.engine.encode(*args, **kwargs)

        def tokenizer_facts(self):
            return self.engine.tokenizer_facts()

        def score_sequence(self, seq, top_k=20):
            scored = self.engine.score_sequence(seq, 5)
            return type(scored)(scored.steps, None)

    ids = a.lm.tokenizer.encode(" Paris, France.")
    answer = forced(Side("A", a), ids)
    exact = cross_score(Side("A", a), Side("B", b), PROMPT, answer, "A")
    bounded = cross_score(Side("A", a), Side("B", TopKOnly(b)), PROMPT, answer, "A")
    assert bounded.bounds and not exact.bounds
    for e, t in zip(exact.tokens, bounded.tokens):
        assert t.bound and t.kl_ab <= e.kl_ab + FLOAT32_NATS and t.js <= e.js + FLOAT32_NATS
        assert t.logprob_b == e.logprob_b  # the chosen token's own number is exact


def test_pair_stats_count_tokens_under_the_threshold(tiny_pair):
    a, b = tiny_pair
    ids = a.lm.tokenizer.encode(" Paris, France. Hello world!")
    cross = cross_score(Side("A", a), Side("B", b), PROMPT, forced(Side("A", a), ids), "A")
    for threshold in (1e-3, 0.05, 0.5):
        expected = [t.index for t in cross.tokens
                    if t.prob_a < threshold or t.prob_b < threshold]
        assert cross.unlikely(threshold) == expected
        assert pair_stats(cross, threshold).unlikely == len(expected)


def test_different_tokenizers_are_refused_saying_how(tiny_pair):
    from tests.tiny import tiny_tokenizer

    a, _ = tiny_pair
    other = tiny_tokenizer()
    other.add_tokens(["<extra>"])
    other.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    b = LoadedModel(ModelSpec(source="tiny-other"), a.lm.model, other, 0.0)
    with pytest.raises(PairingError) as refused:
        check_pair(a.tokenizer_facts(), LocalEngine(b).tokenizer_facts(), "tiny", "other")
    message = str(refused.value)
    assert "vocabularies differ at 1 token ids" in message and "'<extra>' (B)" in message
    assert "chat templates differ" in message
    assert check_pair(a.tokenizer_facts(), a.tokenizer_facts(), "tiny", "tiny") == []


@pytest.mark.slow
def test_cross_scores_equal_a_direct_computation_on_the_bundled_pair(bundled_lm):
    from perplex.engine.local.models import load_model
    from perplex.engine.local.variants import variant_folder

    a = LocalEngine(bundled_lm)
    b = LocalEngine(load_model(ModelSpec(source=str(variant_folder("int8")))))
    ids = bundled_lm.tokenizer.encode(" Paris is the capital and largest city of France.")
    check_against_direct(a, b, Side("A", a), Side("B", b), ids)


def test_a_comparison_is_stored_and_read_back_as_computed(tiny_pair, tmp_path):
    from perplex.workspace.comparison_store import (
        list_comparisons,
        load_comparison,
        save_comparison,
    )
    from perplex.workspace.store import Store

    a, b = tiny_pair
    side_a, side_b = Side("A", a, "Be brief."), Side("B", b)
    gens = [e.generate(s.messages(PROMPT), DecodeParams(max_new_tokens=8)).run()
            for e, s in ((a, side_a), (b, side_b))]
    run = finish_pair(side_a, side_b, PROMPT, *gens)
    conditions = {"A": {"model": "tiny-0", "system": "Be brief."}, "B": {"model": "tiny-1"}}
    with Store.open(tmp_path / "db.duckdb") as store:
        store.ensure_session("s1", "one")
        cid = save_comparison(store, run, conditions, "s1")
        loaded, read_conditions = load_comparison(store, cid)
        assert [c.id for c in list_comparisons(store, "s1")] == [cid]
        assert list_comparisons(store, "other") == []
    assert read_conditions == conditions
    assert loaded.first_divergence == run.first_divergence
    assert loaded.cross_a.tokens == run.cross_a.tokens
    assert loaded.cross_b.tokens == run.cross_b.tokens
    assert loaded.cross_a.under_b.steps == run.cross_a.under_b.steps
    assert loaded.generation_a.messages[0].content == "Be brief."  # conditioning kept


def test_masked_logits_add_nothing_and_the_fast_path_equals_the_term_by_term_one():
    from perplex.core.divergence import _finite_chunk, _masked_chunk

    g = torch.Generator().manual_seed(5)
    za, zb = torch.randn(6, 30, generator=g) * 3, torch.randn(6, 30, generator=g) * 3
    fast, slow = _finite_chunk(za, zb), _masked_chunk(za, zb)
    for f, s in zip(fast, slow):
        # float32 exp/log with float64 sums against float64 term by term: ~1e-7 nats
        assert torch.allclose(f, s, rtol=0, atol=1e-6)
    za[:, :5] = -math.inf  # A masks five tokens, B does not: they add nothing to KL(A‖B)
    found = full_divergence(za, zb)
    la = torch.log_softmax(za.double(), -1)[:, 5:]
    lb = torch.log_softmax(zb.double(), -1)
    expected = (la.exp() * (la - lb[:, 5:])).sum(-1)
    assert found.kl_ab == pytest.approx(expected.tolist(), abs=1e-12)
    assert all(math.isinf(x) for x in found.kl_ba)  # B gives mass where A gives none
    assert all(0 < x < math.log(2) for x in found.js)


@pytest.mark.parametrize("path", ["compiled", "torch"])
def test_the_fast_path_equals_float64_textbook_sums_on_the_same_logits(path, monkeypatch):
    if path == "torch":
        monkeypatch.setattr("perplex.core.divergence.native.load", lambda: None)
    g = torch.Generator().manual_seed(7)
    za = torch.randn(40, 5000, generator=g) * 6  # peaked and long-tailed, like real logits
    zb = za + torch.randn(40, 5000, generator=g) * 2
    found = full_divergence(za, zb)
    kl_ab, kl_ba, js = direct_divergences(za.numpy(), zb.numpy())
    # float32 exp/log with float64 sums: errors scale with the entropy, ~1e-7 nats
    assert np.abs(np.array(found.kl_ab) - kl_ab).max() <= 1e-6
    assert np.abs(np.array(found.kl_ba) - kl_ba).max() <= 1e-6
    assert np.abs(np.array(found.js) - js).max() <= 1e-6


def test_two_tokenizers_are_refused_or_aligned_approximately_on_character_runs(tiny_pair):
    from tests.tiny import tiny_tokenizer

    a, _ = tiny_pair
    other = LocalEngine(tiny_model(seed=2, tokenizer=tiny_tokenizer(vocab_size=275)))
    side_a, side_b = Side("A", a), Side("B", other)
    answer = forced(side_a, a.lm.tokenizer.encode(" Paris, France. Hello world! Sure, 42."))
    with pytest.raises(PairingError, match="different tokens .* “approximate alignment”"):
        cross_score(side_a, side_b, PROMPT, answer, "A")
    cross = cross_score(side_a, side_b, PROMPT, answer, "A", approximate=True)
    assert cross.approximate and all(math.isnan(t.js) for t in cross.tokens)
    assert "".join(t.text for t in cross.tokens) == answer.response_text
    steps_a, steps_b = cross.answer_steps("A"), cross.answer_steps("B")
    assert len(steps_a) != len(steps_b)  # the two really split the text differently
    assert len(cross.tokens) < max(len(steps_a), len(steps_b))  # runs join tokens
    # each run's log-probability is the sum over the tokens inside it, on each side
    assert sum(t.logprob_a for t in cross.tokens) == pytest.approx(
        sum(s.logprob for s in steps_a), abs=1e-9)
    assert sum(t.logprob_b for t in cross.tokens) == pytest.approx(
        sum(s.logprob for s in steps_b), abs=1e-9)


def test_a_mask_written_as_float32s_lowest_value_adds_nothing_on_either_path():
    """Logits of -3.4e38 (a mask as finite numbers) go through torch.

    The compiled exp's floor times such a logit would not vanish.
    """
    g = torch.Generator().manual_seed(11)
    za, zb = torch.randn(6, 300, generator=g) * 3, torch.randn(6, 300, generator=g) * 3
    za[:, :5] = torch.finfo(torch.float32).min
    zb[:, :5] = torch.finfo(torch.float32).min
    found = full_divergence(za, zb)
    # both sides mask the same five tokens: exactly the divergences of the other 295
    kl_ab, kl_ba, js = direct_divergences(za[:, 5:].numpy(), zb[:, 5:].numpy())
    assert np.abs(np.array(found.kl_ab) - kl_ab).max() <= 1e-6
    assert np.abs(np.array(found.kl_ba) - kl_ba).max() <= 1e-6
    assert np.abs(np.array(found.js) - js).max() <= 1e-6
