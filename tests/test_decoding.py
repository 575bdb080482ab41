"""Decoding methods against independent computations: plain greedy, full passes, χ², formulas."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

from perplex.core.errors import InputFormatError
from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.engine.local.engine import LocalEngine
from perplex.modes.comparison.pairing import PairingError
from perplex.modes.decoding.contrastive import ContrastiveParams, contrastive_decode
from perplex.modes.decoding.dola import DolaParams, dola_decode, premature_layers
from perplex.modes.decoding.drafts import Proposal, lookup
from perplex.modes.decoding.run import run_method
from perplex.modes.decoding.speculative import SpeculativeParams, verify
from perplex.modes.decoding.stats import expected_speedup, speculative_stats
from tests.tiny import tiny_model, tiny_tokenizer
from tests.tolerances import FLOAT32_NATS, FLOAT32_PROB

NEAR_TIE = 1e-4  # a top-2 logit gap two float32 passes may order differently (FLOAT32_LOGIT)
PROMPT = (Message("user", "The capital of France is Paris. The Eiffel Tower is in Paris."),)


@pytest.fixture(scope="module")
def tiny():
    """A 4-block tiny model: its first blocks make a real early-exit draft."""
    return LocalEngine(tiny_model(seed=0, layers=4))


@pytest.fixture(scope="module")
def tiny_other(tiny):
    """Another tiny model with the same tokenizer (a second-model draft, an amateur)."""
    return LocalEngine(tiny_model(seed=1, layers=2, tokenizer=tiny.lm.tokenizer))


def reference_greedy(engine: LocalEngine, messages, n: int) -> list[int]:
    """The answer of the project's plain decode loop (not the decoding mode's stream)."""
    gen = engine.generate(messages, DecodeParams(max_new_tokens=n, temperature=0.0)).run()
    return [s.token_id for s in gen.steps if s.role is TokenRole.RESPONSE]


def assert_target_greedy(engine: LocalEngine, messages, answer, reference) -> None:
    """Equal to plain greedy, or parted only at a float32 near-tie of the target's top two."""
    if list(answer) == list(reference):
        return
    i = next((k for k, (a, b) in enumerate(zip(answer, reference)) if a != b),
             min(len(answer), len(reference)))
    context = list(engine.encode(messages, True).ids) + list(reference[:i])
    top2 = torch.topk(engine.sequence_logits(context)[-1], 2).values
    assert float(top2[0] - top2[1]) < NEAR_TIE, (
        f"speculative decoding left the target's greedy path at token {i} without a tie")


@pytest.mark.parametrize("draft,gamma,schedule", [
    ("early_exit", 1, "constant"), ("early_exit", 3, "constant"), ("early_exit", 5, "heuristic"),
    ("prompt_lookup", 2, "constant"), ("prompt_lookup", 6, "heuristic"),
    ("model", 3, "constant"), ("model", 4, "heuristic")])
def test_greedy_speculative_gives_the_targets_greedy_tokens(tiny, tiny_other, draft, gamma,
                                                           schedule):
    params = SpeculativeParams(draft, gamma=gamma, schedule=schedule, exit_layer=2,
                               max_new_tokens=40)
    result = run_method(tiny, PROMPT, params, second=tiny_other if draft == "model" else None)
    assert len(result.method.answer_ids) == 40
    assert_target_greedy(tiny, PROMPT, result.method.answer_ids, reference_greedy(tiny, PROMPT, 40))
    assert result.method.answer_ids == result.greedy.answer_ids
    run = result.method
    assert [e.token_id for e in run.emitted] == list(run.answer_ids)
    accepted = [d for d in run.drafts if d.accepted]
    assert len(accepted) == sum(e.kind == "accepted" for e in run.emitted)
    assert all(d.verified for d in accepted)
    assert sum(run.gammas) == len(run.drafts)  # every drafted token is recorded


@pytest.mark.slow
@pytest.mark.parametrize("draft,gamma", [("early_exit", 2), ("early_exit", 4),
                                         ("prompt_lookup", 3), ("model", 3)])
def test_greedy_speculative_on_the_bundled_model(bundled_lm, draft, gamma):
    from perplex.engine.local.models import ModelSpec, load_model
    from perplex.engine.local.variants import variant_folder

    target = LocalEngine(bundled_lm)
    second = (LocalEngine(load_model(ModelSpec(source=str(variant_folder("int8")))))
              if draft == "model" else None)
    messages = (Message("user", "Summarise: The cat sat on the mat. The cat sat on the mat "
                                "because the mat was warm."),)
    params = SpeculativeParams(draft, gamma=gamma, exit_layer=10, max_new_tokens=24)
    result = run_method(target, messages, params, second=second)
    assert_target_greedy(target, messages, result.method.answer_ids,
                         reference_greedy(target, messages, 24))


def test_sampling_speculative_has_the_targets_distribution(tiny):
    """χ² of the first emitted token over many seeded rounds against p (temperature 1.5)."""
    temperature, trials = 1.5, 6000
    context = list(tiny.encode(PROMPT, True).ids)
    p_logits = tiny.sequence_logits(context)[-1]
    q_logits = tiny.logit_stream(exit_layer=1).extend(context).final[-1]
    p = torch.softmax(p_logits.double() / temperature, -1)
    q = torch.softmax(q_logits.double() / temperature, -1)
    assert 0.2 < 0.5 * float((p - q).abs().sum())  # the draft is really another distribution
    rows = torch.stack([p_logits, p_logits])  # p before the drafted token (and the bonus row)
    generator = torch.Generator().manual_seed(7)

    def first_token(correct: bool) -> int:
        token = int(torch.multinomial(q, 1, generator=generator))
        proposal = Proposal(token, float(q[token]), q)
        if not correct:  # a broken verifier that keeps every draft: the test must catch it
            return token
        kept, _, follow, _ = verify(rows, [proposal], temperature, generator)
        return token if kept else follow

    def chi2_p(correct: bool) -> float:
        counts = torch.bincount(torch.tensor([first_token(correct) for _ in range(trials)]),
                                minlength=len(p)).double()
        expected = p * trials
        big = expected >= 5
        observed = torch.cat([counts[big], counts[~big].sum()[None]])
        wanted = torch.cat([expected[big], expected[~big].sum()[None]])
        return float(chisquare(observed.numpy(), wanted.numpy() * observed.sum().item()
                               / wanted.sum().item()).pvalue)

    assert chi2_p(correct=True) > 1e-3
    assert chi2_p(correct=False) < 1e-6  # the draft's own distribution is told apart


def test_contrastive_scores_equal_a_direct_computation(tiny, tiny_other):
    params = ContrastiveParams(alpha=0.1, beta=None, amateur_temperature=0.8, max_new_tokens=16)
    context = list(tiny.encode(PROMPT, True).ids)
    run = contrastive_decode(tiny, tiny_other, context, params)
    full = context + list(run.answer_ids)
    # two full forward passes against the KV-cached steps: float32 tolerances
    logp_e = torch.log_softmax(tiny.sequence_logits(full).double(), -1)
    logp_a = torch.log_softmax(tiny_other.sequence_logits(full).double() / 0.8, -1)
    for i, record in enumerate(run.contrast):
        row = len(context) - 1 + i
        head = logp_e[row] >= logp_e[row].max() + math.log(0.1)
        score = torch.where(head, logp_e[row] - logp_a[row], torch.tensor(-math.inf).double())
        assert record.token_id == int(torch.argmax(score))
        assert record.score == pytest.approx(float(score[record.token_id]), abs=2 * FLOAT32_NATS)
        assert record.p_a == pytest.approx(float(logp_e[row, record.token_id].exp()),
                                           abs=FLOAT32_PROB)
        assert record.p_b == pytest.approx(float(logp_a[row, record.token_id].exp()),
                                           abs=FLOAT32_PROB)
        assert record.plausible == int(head.sum())
        assert record.greedy_id == int(torch.argmax(logp_e[row]))
        assert record.rank_a == int((logp_e[row] > logp_e[row, record.token_id]).sum()) + 1


def test_with_the_amateur_equal_to_the_expert_the_formula_decides(tiny):
    context = list(tiny.encode(PROMPT, True).ids)
    li = contrastive_decode(tiny, tiny, context, ContrastiveParams(alpha=0.1, max_new_tokens=8))
    obl = contrastive_decode(tiny, tiny, context,
                             ContrastiveParams(alpha=0.1, beta=0.5, max_new_tokens=8))
    full = context + list(li.answer_ids)
    logp = torch.log_softmax(tiny.sequence_logits(full).double(), -1)
    for i, record in enumerate(li.contrast):
        head = logp[len(context) - 1 + i] >= logp[len(context) - 1 + i].max() + math.log(0.1)
        # log p − log p is 0 on all of V_head: the tie goes to its lowest token id
        assert record.token_id == int(torch.nonzero(head)[0, 0])
        assert record.score == 0.0 and record.js == 0.0
        assert record.plausible == int(head.sum())
    # (1 + β) log p − β log p = log p: the expert's own greedy answer
    assert list(obl.answer_ids) == reference_greedy(tiny, PROMPT, 8)
    assert not any(r.changed for r in obl.contrast)


def test_dola_layers_and_scores_equal_a_direct_computation(tiny):
    params = DolaParams(candidates=(0, 1, 2), relative_top=0.1, repetition_penalty=1.2,
                        max_new_tokens=12)
    context = list(tiny.encode(PROMPT, True).ids)
    run = dola_decode(tiny, context, params)
    full = context + list(run.answer_ids)
    lm = tiny.lm
    with torch.no_grad():
        out = lm.model(input_ids=torch.tensor([full]), output_hidden_states=True)
    final = torch.log_softmax(out.logits[0].double(), -1)
    early = {layer: torch.log_softmax(lm.anatomy.unembed_hidden(out.hidden_states[layer][0])
                                      .double(), -1) for layer in (0, 1, 2)}
    for i, record in enumerate(run.contrast):
        row = len(context) - 1 + i
        p = final[row].exp()

        def js(layer):
            q = early[layer][row].exp()
            m = 0.5 * (p + q)
            return float(0.5 * ((p * (final[row] - m.log())).sum()
                                + (q * (early[layer][row] - m.log())).sum()))

        divergences = {layer: js(layer) for layer in (0, 1, 2)}
        best = max(divergences, key=divergences.get)
        assert record.layer == best
        assert record.js == pytest.approx(divergences[best], abs=FLOAT32_NATS)
        raw = final[row] - early[best][row]
        seen = torch.tensor(sorted(set(full[:row + 1])))
        raw[seen] = torch.where(raw[seen] > 0, raw[seen] / 1.2, raw[seen] * 1.2)
        keep = final[row] >= final[row].max() + math.log(0.1)
        score = torch.where(keep, raw, torch.tensor(-math.inf).double())
        assert record.token_id == int(torch.argmax(score))
        assert record.score == pytest.approx(float(score[record.token_id]), abs=2 * FLOAT32_NATS)


def test_premature_layer_buckets():
    assert premature_layers("low", 30, tied=True) == (2, 4, 6, 8, 10, 12, 14)
    assert premature_layers("high", 30, tied=True) == tuple(range(15, 30, 2))
    assert premature_layers("low", 4, tied=False) == (0,)
    assert premature_layers("high", 48, tied=False) == tuple(range(28, 48, 2))


def test_prompt_lookup_copies_the_latest_earlier_match():
    ids = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert lookup(ids, 3, max_ngram=3) == [7, 8, 5]
    assert lookup([4, 5, 6], 3, max_ngram=3) == []


def test_expected_speedup_worked_by_hand():
    # α = 0.8, γ = 4, c = 0.25: (1 − 0.8⁵) / (0.2 · (4 · 0.25 + 1)) = 0.67232 / 0.4
    assert expected_speedup(0.8, 4, 0.25) == pytest.approx(1.6808)
    assert expected_speedup(1.0, 3, 0.0) == pytest.approx(4.0)


def test_speculative_statistics_count_what_happened(tiny):
    result = run_method(tiny, PROMPT, SpeculativeParams("early_exit", gamma=3, exit_layer=2,
                                                        max_new_tokens=30))
    stats = speculative_stats(result)
    drafts = result.method.drafts
    assert sum(c for _, c in stats.by_position) == sum(d.verified for d in drafts)
    assert stats.acceptance == pytest.approx(sum(d.accepted for d in drafts)
                                             / sum(d.verified for d in drafts))
    assert all(a <= c for a, c in stats.by_position)
    assert stats.by_position[0][1] == stats.rounds  # the first slot is checked every round
    assert math.isfinite(stats.cost_ratio) and stats.cost_ratio > 0


def test_bad_input_is_refused_with_a_message(tiny):
    other = LocalEngine(tiny_model(seed=2, layers=2, tokenizer=tiny_tokenizer(vocab_size=280)))
    with pytest.raises(PairingError, match="do not share a tokenizer"):
        run_method(tiny, PROMPT, SpeculativeParams("model", max_new_tokens=4), second=other)
    with pytest.raises(PairingError, match="vocabulary"):
        run_method(tiny, PROMPT, ContrastiveParams(max_new_tokens=4), second=other)
    with pytest.raises(InputFormatError, match="γ = 0 is out of range"):
        SpeculativeParams(gamma=0)
    with pytest.raises(InputFormatError, match="γ = 40 is out of range"):
        SpeculativeParams(gamma=40)
    for alpha in (0.0, 1.5, -0.1):
        with pytest.raises(InputFormatError, match=r"outside \(0, 1\]"):
            ContrastiveParams(alpha=alpha)
    with pytest.raises(InputFormatError, match="beyond the model's depth: it has 4 layers"):
        run_method(tiny, PROMPT, DolaParams(candidates=(1, 7), max_new_tokens=4))
    with pytest.raises(InputFormatError, match="choose 1 to 3"):
        run_method(tiny, PROMPT, SpeculativeParams("early_exit", exit_layer=4, max_new_tokens=4))


@pytest.mark.parametrize("params", [
    SpeculativeParams("early_exit", gamma=3, exit_layer=2, temperature=0.9, seed=3,
                      max_new_tokens=20),
    ContrastiveParams(beta=0.5, max_new_tokens=10),
    DolaParams(candidates=(0, 2), max_new_tokens=10)])
def test_a_run_is_stored_and_read_back_as_computed(tiny, tmp_path, params):
    from perplex.workspace.decoding_store import list_decodings, load_decoding, save_decoding
    from perplex.workspace.store import Store

    store = Store.open(tmp_path / "decoding.duckdb")
    result = run_method(tiny, PROMPT, params)
    run_id = save_decoding(store, PROMPT[0].content, result.method, result.greedy,
                           result.method_generation, result.greedy_generation, None, None)
    back = load_decoding(store, run_id)
    assert back.method == result.method and back.greedy == result.greedy
    assert back.method_generation.steps == result.method_generation.steps
    assert back.greedy_generation.messages == result.greedy_generation.messages
    [summary] = list_decodings(store)
    assert (summary.id, summary.method, summary.tokens) == (run_id, result.method.method,
                                                            len(result.method.answer_ids))
    assert summary.first_difference == result.first_difference


def test_an_early_exit_amateur_is_the_experts_first_blocks(tiny):
    params = ContrastiveParams(amateur_exit_layer=2, max_new_tokens=6)
    context = list(tiny.encode(PROMPT, True).ids)
    run = contrastive_decode(tiny, tiny, context, params)
    full = context + list(run.answer_ids)
    lm = tiny.lm
    with torch.no_grad():
        hidden = lm.model(input_ids=torch.tensor([full]), output_hidden_states=True).hidden_states
    amateur = torch.log_softmax(lm.anatomy.unembed_hidden(hidden[2][0]).double(), -1)
    for i, record in enumerate(run.contrast):
        assert record.p_b == pytest.approx(float(amateur[len(context) - 1 + i,
                                                         record.token_id].exp()),
                                           abs=FLOAT32_PROB)


def test_an_early_exit_stays_early_after_the_lens_has_traced_the_model():
    """Nnsight leaves a `forward` on the modules it traced; a view must not run the original."""
    engine = LocalEngine(tiny_model(seed=3, layers=4))
    ids = [5, 6, 7, 8, 9]
    engine.residuals(ids, [1])  # an nnsight trace, as the Logit Lens makes
    early = engine.logit_stream(exit_layer=2).extend(ids).final
    with torch.no_grad():
        hidden = engine.lm.model(input_ids=torch.tensor([ids]),
                                 output_hidden_states=True).hidden_states
    # the same blocks on the same tokens, read two ways: float32 tolerance
    torch.testing.assert_close(early, engine.lm.anatomy.unembed_hidden(hidden[2][0]),
                               atol=1e-4, rtol=0)


def test_streams_leave_the_models_own_hidden_states_alone():
    engine = LocalEngine(tiny_model(seed=4, layers=3))
    ids = [5, 6, 7, 8]
    engine.logit_stream().extend(ids, layers=[0, 1], capture=[0, 3])
    engine.logit_stream(exit_layer=1).extend(ids)
    with torch.no_grad():
        states = engine.lm.model(input_ids=torch.tensor([ids]),
                                 output_hidden_states=True).hidden_states
    assert len(states) == 4  # the embedding and one per block, each recorded once


@pytest.mark.slow
def test_the_figures_are_built_from_a_run(tiny):
    from perplex.modes.decoding import plots
    from perplex.modes.decoding.stats import contrast_stats

    spec = run_method(tiny, PROMPT, SpeculativeParams("early_exit", gamma=3, exit_layer=2,
                                                      max_new_tokens=20))
    stats = speculative_stats(spec)
    bars = plots.acceptance_by_position(stats)
    assert list(bars.data[0].y) == pytest.approx([a / c if c else 0.0
                                                  for a, c in stats.by_position])
    dola = run_method(tiny, PROMPT, DolaParams(candidates=(0, 1, 2), max_new_tokens=8))
    layers = plots.layer_histogram(contrast_stats(dola), 4)
    assert sum(layers.data[0].y) == 8
    timeline = plots.contrast_timeline(dola.method, ["t"] * 8)
    assert list(timeline.data[0].y) == pytest.approx([r.p_a for r in dola.method.contrast])


def test_the_summary_says_each_count_beside_what_it_counts(tiny):
    """Numbers issue, point 9: "at 48 tokens … changed the choice" sat beside "30 of 48"."""
    from perplex.modes.decoding.stats import contrast_stats, contrast_summary

    for params in (DolaParams(candidates=(0, 1, 2), max_new_tokens=12),
                   ContrastiveParams(max_new_tokens=12)):
        result = run_method(tiny, PROMPT, params)
        records = result.method.contrast
        stats = contrast_stats(result)
        changed = sum(r.token_id != r.greedy_id for r in records)  # by hand, from the records
        binding = sum(r.constraint_changed for r in records)
        said = contrast_summary(stats)
        assert said.startswith(f"{changed} of {len(records)} tokens differ from what plain "
                               "greedy picks")
        assert (f"At {binding} of {len(records)} tokens the plausibility constraint decided"
                in said) == (binding > 0)
        assert "changed the choice" not in said
