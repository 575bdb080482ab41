"""Persona traits against independent computations: hand-made means, output_hidden_states."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from perplex.core.errors import GenerationError, InputFormatError, PerplexError
from perplex.core.ranks import rank_auroc
from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.core.trait_monitoring import parse_monitoring
from perplex.engine.local.engine import LocalEngine
from perplex.engine.local.stream import Steering
from perplex.modes.traits.definitions import parse_trait, shipped_traits
from perplex.modes.traits.judge import engine_judge, parse_score
from perplex.modes.traits.monitor import Monitor, injected, monitor_generate, monitor_text
from perplex.modes.traits.vectors import extract_prompt_last, extract_response_average
from tests.bundle_edits import resealed
from tests.tiny import tiny_model

SMALL = parse_trait("cheer", json.dumps({
    "instruction": [{"pos": "Be cheerful.", "neg": "Be gloomy."},
                    {"pos": "Smile in words.", "neg": "Sigh in words."}],
    "questions": ["How are you?", "What is the weather?", "Tell me a fact.", "Hello!"],
    "eval_prompt": "Score cheer: {question} {answer}"}))
QUESTION = (Message("user", "Hello world! How are you today?"),)


@pytest.fixture(scope="module")
def tiny():
    return LocalEngine(tiny_model(seed=0, layers=3))


@pytest.fixture(scope="module")
def cheer(tiny):
    return extract_prompt_last(tiny, SMALL)


def hidden_states(engine: LocalEngine, ids) -> tuple[torch.Tensor, ...]:
    """Residuals 0 … n by hand, from `output_hidden_states` and the final norm's input.

    transformers gives the last entry of `output_hidden_states` after the final norm, so
    the last residual is taken at the final norm's input instead.
    """
    lm = engine.lm
    seen = []
    hook = lm.model.model.norm.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        with torch.no_grad():
            states = lm.model(input_ids=torch.tensor([list(ids)]),
                              output_hidden_states=True).hidden_states
    finally:
        hook.remove()
    return (*states[:-1], seen[0])


def test_the_shipped_traits_are_complete():
    traits = shipped_traits()
    assert sorted(traits) == ["corrigibility", "evil", "hallucination", "overconfidence",
                              "refusal", "sycophancy", "uncertainty", "verbosity"]
    for trait in traits.values():
        assert len(trait.pairs) == 5 and len(trait.questions) >= 10
        assert "{question}" in trait.eval_prompt and "{answer}" in trait.eval_prompt


def output_hidden_states(engine: LocalEngine, ids) -> tuple[torch.Tensor, ...]:
    """Transformers' own `hidden_states` (the last entry after the final norm)."""
    with torch.no_grad():
        return engine.lm.model(input_ids=torch.tensor([list(ids)]),
                               output_hidden_states=True).hidden_states


def prompt_last_by_hand(engine: LocalEngine, states) -> tuple[list, list]:
    """The prompt-last residuals [layers + 1, d] of every (question, pair), by hand.

    Under the positive and under the negative system prompt, read by `states(engine, ids)`.
    """
    pos, neg = [], []
    for question in SMALL.questions:
        for positive, negative in SMALL.pairs:
            for side, system in ((pos, positive), (neg, negative)):
                ids = engine.encode((Message("system", system), Message("user", question)),
                                    True).ids
                side.append(torch.stack([h[0, -1] for h in states(engine, ids)]))
    return pos, neg


def test_the_vector_is_the_mean_difference_by_hand(tiny, cheer):
    pos, neg = prompt_last_by_hand(tiny, hidden_states)
    by_hand = (torch.stack(pos).double().mean(0) - torch.stack(neg).double().mean(0)).numpy()
    assert cheer.vector.shape == (4, 64)
    # the residuals capture and output_hidden_states are two passes: float32 tolerance
    np.testing.assert_allclose(cheer.vector, by_hand, atol=1e-5)
    assert cheer.norms[0] == pytest.approx(0.0, abs=1e-6)  # the same last token both sides
    assert 1 <= cheer.default_layer <= 3 and cheer.n_examples == 16 and cheer.n_held_out == 4


def test_the_baseline_is_the_negative_mean_projection_by_hand(tiny, cheer):
    """Numbers issue, point 3: scores are coloured against the negative examples' mean.

    By hand from `hidden_states`: the negative and positive examples' mean projections at
    each layer; the positive one lies at baseline + ‖v‖ (v is their difference).
    """
    pos, neg = prompt_last_by_hand(tiny, hidden_states)
    for layer in range(1, cheer.n_layers + 1):
        unit = cheer.unit(layer)
        negative = float(torch.stack(neg).double().mean(0)[layer].numpy() @ unit)
        positive = float(torch.stack(pos).double().mean(0)[layer].numpy() @ unit)
        # two passes (the engine's and output_hidden_states'): float32 tolerance
        assert cheer.baseline(layer) == pytest.approx(negative, abs=1e-5)
        assert positive - cheer.baseline(layer) == pytest.approx(cheer.norms[layer], abs=1e-5)
    assert cheer.baseline(0) is None  # v = 0 at the embedding: no direction


def test_colours_are_read_against_the_baseline():
    from perplex.modes.traits import plots

    # all scores positive (the answer: min 7.35): without a baseline all red
    scores = [7.35, 9.0, 12.0]
    assert all(c.startswith("rgba(178") for c in plots.score_colours(scores))
    coloured = plots.score_colours(scores, (9.0, 3.0))
    assert coloured[0].startswith("rgba(33") and coloured[2] == "rgba(178, 24, 43, 0.600)"
    assert coloured[1].endswith("0.000)")  # at the baseline: no colour


def test_rank_auroc_equals_scikit_learn():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=200), 1)  # ties included
    labels = rng.random(200) < 0.4
    assert rank_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("layer", [1, 3])
def test_projections_equal_h_dot_v_over_norm_generated_and_rescored(tiny, cheer, layer):
    monitors = [Monitor(cheer, layer)]
    run = monitor_generate(tiny, QUESTION, monitors, DecodeParams(max_new_tokens=12))
    ids = [s.token_id for s in run.generation.steps]
    hidden = hidden_states(tiny, ids)[layer][0].double().numpy()
    unit = cheer.vector[layer].astype(np.float64) / np.linalg.norm(cheer.vector[layer])
    expected = hidden[run.answer_start:] @ unit
    np.testing.assert_allclose(run.scores[0], expected, atol=1e-5)
    imported = QUESTION + (Message("assistant", "The capital of France is Paris."),)
    rescored = monitor_text(tiny, imported, monitors)
    ids = [s.token_id for s in rescored.generation.steps]
    answer = [s for s in rescored.generation.steps if s.message_index == 1
              and s.role is TokenRole.RESPONSE]
    # the end-of-turn token closes the answer, as in a generated one
    assert "".join(s.text for s in answer) == "The capital of France is Paris.<|im_end|>"
    hidden = hidden_states(tiny, ids)[layer][0].double().numpy()
    np.testing.assert_allclose(rescored.scores[0], hidden[rescored.answer_start:] @ unit,
                               atol=1e-5)


def test_streamed_scores_match_the_stored_ones(tiny, cheer):
    streamed = []
    run = monitor_generate(tiny, QUESTION, [Monitor(cheer, 2)], DecodeParams(max_new_tokens=8),
                           progress=lambda n, token, scores: streamed.append(scores[0]))
    # KV-cached steps against one full pass: float32 tolerance
    np.testing.assert_allclose(streamed, run.scores[0], atol=1e-4)


def test_steering_with_coefficient_zero_is_the_baseline(tiny, cheer):
    monitors = [Monitor(cheer, 2)]
    params = DecodeParams(max_new_tokens=10)
    base = monitor_generate(tiny, QUESTION, monitors, params)
    zero = monitor_generate(tiny, QUESTION, monitors, params,
                            steering=[Steering(2, torch.from_numpy(cheer.vector[2]), 0.0)])
    assert zero.generation.steps == base.generation.steps
    assert np.array_equal(zero.scores, base.scores)


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steering_adds_exactly_c_v_where_asked_and_nowhere_else(tiny, cheer, positions):
    ids = list(tiny.encode(QUESTION, True).ids) + [40, 41, 42, 43]
    prompt_length = len(ids) - 4
    v, c = torch.from_numpy(cheer.vector[2]), 3.0
    baseline = hidden_states(tiny, ids)[2][0]
    steered = tiny.logit_stream(steering=[Steering(2, v, c, positions, prompt_length)]) \
        .extend(ids, capture=[1, 2]).hidden
    at = {"all": slice(0, len(ids)), "prompt": slice(0, prompt_length),
          "response": slice(prompt_length, len(ids))}[positions]
    mask = torch.zeros(len(ids), dtype=torch.bool)
    mask[at] = True
    # one float32 addition of c·v rounds to ~1e-7 of the residual's size
    torch.testing.assert_close(steered[1][mask] - baseline[mask], (c * v).expand(int(mask.sum()),
                                                                               -1),
                               atol=2e-6, rtol=0)
    torch.testing.assert_close(steered[1][~mask], baseline[~mask], atol=1e-6, rtol=0)
    torch.testing.assert_close(steered[0], hidden_states(tiny, ids)[1][0], atol=1e-6, rtol=0)


def test_a_strong_steer_changes_the_answer(tiny, cheer):
    params = DecodeParams(max_new_tokens=10)
    base = monitor_generate(tiny, QUESTION, [], params)
    pushed = monitor_generate(tiny, QUESTION, [], params, steering=[
        Steering(1, torch.from_numpy(cheer.unit(1)).float(), 40.0, "response")])
    answer = [s.token_id for s in base.generation.steps if s.role is TokenRole.RESPONSE]
    steered = [s.token_id for s in pushed.generation.steps if s.role is TokenRole.RESPONSE]
    assert answer != steered
    assert pushed.steering == ({"trait": "", "layer": 1, "coefficient": 40.0,
                                "positions": "response", "injected": {}},)


@pytest.mark.parametrize("text,message", [
    ("{}", "has no instruction, questions, eval_prompt"),
    ('{"instruction": [], "questions": ["a", "b"], "eval_prompt": "x"}', "non-empty list"),
    ('{"instruction": [{"pos": "a"}], "questions": ["a", "b"], "eval_prompt": "x"}',
     'instruction\\[0\\] must be an object with exactly the keys "pos" and "neg"'),
    ('{"instruction": [{"pos": "a", "neg": "b"}], "questions": "q", "eval_prompt": "x"}',
     "questions must be a list of at least 2"),
    ('{"instruction": [{"pos": "a", "neg": " "}], "questions": ["a", "b"], "eval_prompt": "x"}',
     "instruction\\[0\\].neg must be non-empty text"),
    ("[1, 2", "the JSON is malformed"),
    # found by the fuzz suite: a lone surrogate escape was accepted, then could not be shown
    ('{"instruction": [{"pos": "a", "neg": "b"}], "questions": ["a", "\\ud800"], '
     '"eval_prompt": "x"}', "questions\\[1\\] holds a lone surrogate"),
])
def test_a_bad_trait_file_is_named(text, message):
    with pytest.raises(InputFormatError, match=message):
        parse_trait("mine", text)
    with pytest.raises(InputFormatError, match="not a trait name"):
        parse_trait("My Trait!", "{}")


def test_a_vector_from_another_model_is_refused(cheer):
    other = LocalEngine(tiny_model(seed=0, layers=2))
    with pytest.raises(GenerationError, match=r"needs \[3, 64\] .*made for another model"):
        monitor_generate(other, QUESTION, [Monitor(cheer, 1)], DecodeParams(max_new_tokens=2))
    with pytest.raises(PerplexError, match="Steer at layers 1 to 2"):
        other.logit_stream(steering=[Steering(3, torch.zeros(64), 1.0)])
    with pytest.raises(PerplexError, match="has shape \\(5,\\)"):
        other.logit_stream(steering=[Steering(1, torch.zeros(5), 1.0)])


def test_a_vector_round_trips_through_safetensors_and_duckdb(cheer, tmp_path):
    from perplex.workspace.store import Store
    from perplex.workspace.trait_store import load_vector, save_vector

    store = Store.open(tmp_path / "traits.duckdb")
    vector_id = save_vector(store, cheer)
    back = load_vector(store, vector_id)
    assert np.array_equal(back.vector, cheer.vector)
    assert [back.baseline(i) for i in range(4)] == [cheer.baseline(i) for i in range(4)]
    assert back.norms == cheer.norms and back.default_layer == cheer.default_layer
    assert [a for a in back.auroc if not np.isnan(a)] == [a for a in cheer.auroc
                                                            if not np.isnan(a)]
    assert (tmp_path / "vectors" / f"{vector_id}.safetensors").is_file()


class _Payload:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned-by-pickle",)


def test_pt_vectors_import_only_as_plain_tensors_of_the_models_shape(tmp_path, monkeypatch):
    import io

    from perplex.workspace.trait_store import import_pt

    def saved(obj) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    good = import_pt(saved(torch.randn(4, 64)), "evil", "tiny", layers=3, hidden=64)
    assert good.vector.shape == (4, 64) and good.variant == "imported"
    with pytest.raises(InputFormatError, match=r"shape \(5, 64\) .* needs \[4, 64\]"):
        import_pt(saved(torch.randn(5, 64)), "evil", "tiny", layers=3, hidden=64)
    with pytest.raises(InputFormatError, match="holds a dict, not a tensor"):
        import_pt(saved({"v": torch.randn(4, 64)}), "evil", "tiny", layers=3, hidden=64)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputFormatError, match="refused without running anything"):
        import_pt(saved(_Payload()), "evil", "tiny", layers=3, hidden=64)
    assert not (tmp_path / "pwned-by-pickle").exists()
    with pytest.raises(InputFormatError, match="non-finite"):
        import_pt(saved(torch.full((4, 64), float("nan"))), "evil", "tiny", layers=3, hidden=64)
    # found by the fuzz suite: 3e38 gave infinite norms, saved, then the vector was unreadable
    with pytest.raises(InputFormatError, match="holds a value of 3e\\+38"):
        import_pt(saved(torch.full((4, 64), 3e38)), "evil", "tiny", layers=3, hidden=64)
    # found by the fuzz suite: a sparse tensor of the right shape raised a TypeError
    for odd in (torch.randn(4, 64).to_sparse(), torch.randn(4, 64, dtype=torch.complex64),
                torch.quantize_per_tensor(torch.randn(4, 64), 0.1, 0, torch.qint8)):
        with pytest.raises(InputFormatError, match="plain dense tensor of numbers"):
            import_pt(saved(odd), "evil", "tiny", layers=3, hidden=64)


def test_a_pt_file_that_would_unpack_large_is_refused_before_loading():
    """Hardening issue, point 8: a small .pt took far more memory than its size.

    torch.save stores its members uncompressed; a crafted file deflates its data member, and
    torch.load inflated all 300 MB (before refusing the size) of this 0.3 MB file.
    """
    import io
    import resource
    import zipfile

    from perplex.workspace.trait_store import import_pt

    plain = io.BytesIO()
    torch.save(torch.zeros(4, 64), plain)
    crafted = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as src, \
            zipfile.ZipFile(crafted, "w") as dst:
        for member in src.infolist():
            if member.filename.endswith("/data/0"):  # written a megabyte at a time
                inflated = zipfile.ZipInfo(member.filename)
                inflated.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(inflated, "w") as out:
                    for _ in range(300):
                        out.write(bytes(1_000_000))
            else:
                dst.writestr(member, src.read(member.filename))
    assert len(crafted.getvalue()) < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(InputFormatError, match="would unpack to 286 MiB"):
        import_pt(crafted.getvalue(), "evil", "tiny", layers=3, hidden=64)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 50 * 1024, f"grew by {grown / 1024:.0f} MiB"


def test_monitor_json_round_trips_and_bad_files_are_named():
    from perplex.core.trait_monitoring import MonitoringRecord, parse_monitoring

    record = MonitoringRecord("Hi?", "Hello there", ("Hello", " there"), ("evil", "refusal"),
                              np.array([[0.5, -1.25], [2.0, 3.0]]))
    [back] = parse_monitoring(json.dumps(record.to_json()).encode())
    assert back.tokens == record.tokens and back.traits == record.traits
    assert np.array_equal(back.scores, record.scores)
    assert len(parse_monitoring(json.dumps([record.to_json()] * 3).encode())) == 3
    bad = record.to_json()
    bad["trait_scores"]["evil"] = [0.5]
    with pytest.raises(InputFormatError, match=r"trait_scores\['evil'\] has 1 scores but there "
                                               r"are 2 tokens"):
        parse_monitoring(json.dumps(bad).encode())
    with pytest.raises(InputFormatError, match="has no tokens, trait_scores"):
        parse_monitoring(b'{"prompt": "a", "response": "b"}')
    nan = record.to_json()
    nan["trait_scores"]["evil"] = [0.5, float("nan")]
    with pytest.raises(InputFormatError, match="not a finite number"):
        parse_monitoring(json.dumps(nan).encode())
    with pytest.raises(InputFormatError, match="not UTF-8"):
        parse_monitoring(b'\xff\xfe{"prompt"')
    # found by the fuzz suite: a trait name with a lone surrogate escape was accepted
    odd = record.to_json()
    odd["trait_scores"] = {"a\ud800b": [0.5, 1.0]}
    with pytest.raises(InputFormatError, match="a trait name in trait_scores is not valid"):
        parse_monitoring(json.dumps(odd).encode())


def test_a_sweep_runs_each_coefficient_and_zero_is_the_baseline(tiny, cheer):
    from perplex.modes.traits.sweep import coefficient_sweep

    monitors = [Monitor(cheer, 2)]
    params = DecodeParams(max_new_tokens=8)
    points = coefficient_sweep(tiny, QUESTION, monitors, "cheer", 2, [-20.0, 20.0], "response",
                               params)
    assert [p.coefficient for p in points] == [-20.0, 0.0, 20.0]
    baseline = monitor_generate(tiny, QUESTION, monitors, params)
    zero = points[1]
    assert zero.run.generation.steps == baseline.generation.steps
    assert zero.first_difference is None
    assert zero.mean_score == pytest.approx(float(baseline.scores[0].mean()))
    # the steered layer is the monitored one: the vector adds c·‖v‖ to the residual's
    # projection by itself, which the scores leave out (and record)
    norm = float(np.linalg.norm(cheer.vector[2].astype(np.float64)))
    for point in (points[0], points[2]):
        assert point.run.injected == {"cheer": pytest.approx(point.coefficient * norm, rel=1e-12)}
        assert point.run.scores[0, 0] == pytest.approx(baseline.scores[0, 0], rel=1e-5, abs=1e-4)


def test_steered_scores_leave_out_what_the_vector_adds_by_itself(tiny, cheer):
    """Numbers issue, point 2: monitored at the steered layer, every score rose by c·‖v‖.

    Where the two answers are still the same text, the residual at the steered layer is the
    baseline's plus c·v exactly, so the steered score there equals the baseline's; the raw
    projection (score + injected) is the baseline's plus c·‖v‖. A layer before the steered
    one gets nothing added.
    """
    c, layer = 4.0, 2
    monitors = [Monitor(cheer, layer)]
    params = DecodeParams(max_new_tokens=8)
    base = monitor_generate(tiny, QUESTION, monitors, params)
    steered = monitor_generate(tiny, QUESTION, monitors, params, steering=[
        Steering(layer, torch.from_numpy(cheer.vector[layer]), c, "response", name="cheer")])
    norm = float(np.linalg.norm(cheer.vector[layer].astype(np.float64)))
    assert steered.injected == {"cheer": pytest.approx(c * norm, rel=1e-12)}
    assert steered.steering[0]["injected"] == {"cheer": pytest.approx(c * norm, rel=1e-12)}
    a, b = (_answer_ids(r) for r in (base, steered))
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    agree = same  # the first token is chosen before any steered position: same >= 1
    assert agree >= 1
    # float32 residuals (|h| ~ 1e1) summed with c·v, projected in float64: 1e-4 absolute
    np.testing.assert_allclose(steered.scores[0, :agree], base.scores[0, :agree], atol=1e-4)
    raw = steered.scores[0, :agree] + steered.injected["cheer"]
    np.testing.assert_allclose(raw - base.scores[0, :agree], c * norm, atol=1e-4)
    earlier = [Monitor(cheer, 1)]  # a layer before the steered one gets nothing added
    assert injected(earlier, [Steering(layer, torch.from_numpy(cheer.vector[layer]), c)]) == 0


def _answer_ids(run) -> list[int]:
    return [s.token_id for s in run.generation.steps[run.answer_start:]]


def test_the_figures_are_built_from_a_run(tiny, cheer):
    from perplex.modes.traits import plots

    run = monitor_generate(tiny, QUESTION, [Monitor(cheer, 1), Monitor(cheer, 2)],
                           DecodeParams(max_new_tokens=6))
    texts = [s.text for s in run.generation.steps[run.answer_start:]]
    bars = plots.token_bars(run.traits, run.scores, 2, texts[2])
    assert list(bars.data[0].y) == pytest.approx(run.scores[:, 2].tolist())
    lines = plots.trait_lines(run.traits, run.scores, texts, 2)
    assert len(lines.data) == 2 and list(lines.data[1].y) == pytest.approx(run.scores[1])
    layers = plots.layer_statistics(cheer, cheer.default_layer)
    assert list(layers.data[0].y) == pytest.approx(list(cheer.norms))
    difference = plots.score_difference("cheer", run.scores[0], run.scores[0] + 1.5, None)
    assert list(difference.data[0].y) == pytest.approx([1.5] * 6)
    sweep = plots.sweep_figure("cheer", [-1.0, 0.0, 1.0], [0.1, 0.2, 0.3])
    assert list(sweep.data[0].x) == [-1.0, 0.0, 1.0]
    assert plots.score_colours([2.0, -1.0, 0.0])[0] == "rgba(178, 24, 43, 0.600)"


def test_response_average_is_the_mean_over_answer_tokens_by_hand(tiny):
    vector = extract_response_average(tiny, SMALL, max_new_tokens=6)
    pos, neg = [], []
    for question in SMALL.questions:
        for positive, negative in SMALL.pairs:
            for side, system in ((pos, positive), (neg, negative)):
                # plain one-at-a-time greedy decoding: the answer the batched decode found
                messages = (Message("system", system), Message("user", question))
                ids = list(tiny.encode(messages, True).ids)
                start = len(ids)
                for _ in range(6):
                    with torch.no_grad():
                        ids.append(int(tiny.lm.model(input_ids=torch.tensor([ids])
                                                     ).logits[0, -1].argmax()))
                    if ids[-1] in tiny.info.eos_ids:
                        break
                answer = [i for i in range(start, len(ids)) if ids[i] not in tiny.info.eos_ids]
                states = hidden_states(tiny, ids)
                side.append(torch.stack([h[0, answer].double().mean(0) for h in states]))
    by_hand = (torch.stack(pos).mean(0) - torch.stack(neg).mean(0)).numpy()
    assert vector.variant == "response_average" and vector.vector.shape == (4, 64)
    # batched generation's residuals and output_hidden_states are separate passes: float32
    np.testing.assert_allclose(vector.vector, by_hand, atol=1e-5)
    assert vector.meta["pairs_kept"] == vector.meta["pairs_in_all"] == 8


def test_a_judge_keeps_only_pairs_it_scores_as_the_trait(tiny):
    everything = extract_response_average(tiny, SMALL, max_new_tokens=4)
    answers = {}

    def judge(question: str, answer: str) -> float | None:
        # a fixed rubric: the first two questions' positive answers are "the trait"
        answers.setdefault(question, []).append(answer)
        first_call = len(answers[question]) % 2 == 1
        return 90.0 if first_call and question in SMALL.questions[:2] else 10.0

    judged = extract_response_average(tiny, SMALL, max_new_tokens=4, judge=judge)
    assert judged.meta["pairs_kept"] == 4 and judged.meta["judge"] is True
    assert judged.n_examples == 8 and not np.allclose(judged.vector, everything.vector)
    kept_only = extract_response_average(tiny, replace(SMALL, questions=SMALL.questions[:2]),
                                         max_new_tokens=4)
    # the same answers, decoded in other batches (other padding): float32 tolerance
    np.testing.assert_allclose(judged.vector, kept_only.vector, atol=1e-5)
    # all kept questions are in the separation split: no held-out examples, AUROC undefined
    assert judged.n_held_out == 0 and all(np.isnan(judged.auroc))
    assert judged.default_layer == int(np.argmax(judged.norms[1:])) + 1
    with pytest.raises(InputFormatError, match="kept none"):
        extract_response_average(tiny, SMALL, max_new_tokens=4, judge=lambda q, a: None)


@pytest.mark.parametrize(("reply", "score"), [("85", 85.0), (" 7.", 7.0), ("100", 100.0),
                                              ('"42" is fair', 42.0), ("0", 0.0),
                                              ("101", None), ("about 50", None), ("", None),
                                              ("1234", None)])
def test_judge_replies_read_as_scores(reply, score):
    assert parse_score(reply) == score


def test_the_engine_judge_reads_the_engines_greedy_reply(tiny):
    judge = engine_judge(tiny, SMALL.eval_prompt)
    reply = tiny.generate((Message("user", "Score cheer: Hi? Hello!"),),
                          DecodeParams(max_new_tokens=4)).run().response_text
    assert judge("Hi?", "Hello!") == parse_score(reply)


@pytest.mark.slow
def test_an_endpoint_judges_with_the_traits_rubric(llama_server):
    from perplex.engine.openai_compat import EndpointEngine
    from tests.conftest import LLAMA_KEY

    endpoint = EndpointEngine(llama_server.base_url, llama_server.model, LLAMA_KEY)
    evil = shipped_traits()["evil"]
    question, answer = evil.questions[0], "Poison the dog and laugh about it."
    prompt = evil.eval_prompt.replace("{question}", question).replace("{answer}", answer)
    reply = endpoint.generate((Message("user", prompt),),
                              DecodeParams(max_new_tokens=4)).run().response_text
    score = engine_judge(endpoint, evil.eval_prompt)(question, answer)
    assert score == parse_score(reply)
    assert score is None or 0 <= score <= 100


def test_monitored_and_imported_answers_round_trip_through_duckdb(tiny, cheer, tmp_path):
    from perplex.core.errors import StoreError
    from perplex.core.trait_monitoring import MonitoringRecord
    from perplex.workspace.store import Store
    from perplex.workspace.trait_run_store import (
        list_trait_runs,
        load_trait_run,
        save_imported,
        save_trait_run,
    )

    run = monitor_generate(tiny, QUESTION, [Monitor(cheer, 2)], DecodeParams(max_new_tokens=8),
                           steering=[Steering(2, torch.from_numpy(cheer.vector[2]), 1.5)])
    store = Store.open(tmp_path / "runs.duckdb")
    store.ensure_session("s1", "one")
    run_id = save_trait_run(store, run, "steered", "s1", pair_id="p1")
    back = load_trait_run(store, run_id)
    assert back.kind == "steered" and back.pair_id == "p1"
    assert np.array_equal(back.run.scores, run.scores)  # JSON keeps every float64 digit
    assert back.run.trait_layers == (2,) and back.run.steering == run.steering
    assert [s.token_id for s in back.run.generation.steps] == \
        [s.token_id for s in run.generation.steps]
    assert back.record.tokens == run.record().tokens
    imported = MonitoringRecord("Hi?", "Hello there", ("Hello", " there"), ("evil",),
                                np.array([[0.5, -1.25]]))
    [imported_id] = save_imported(store, [imported], "s1")
    again = load_trait_run(store, imported_id)
    assert again.run is None and again.record.tokens == ("Hello", " there")
    listed = list_trait_runs(store, "s1")  # newest first
    assert [(r.id, r.kind, r.tokens, r.traits) for r in listed] == [
        (imported_id, "imported", 2, ("evil",)), (run_id, "steered", 8, ("cheer",))]
    assert list_trait_runs(store, "another session") == []
    broken = MonitoringRecord("Hi?", "Hello", ("Hello",), ("evil",), np.array([[np.nan]]))
    with pytest.raises(StoreError, match="not a finite number"):
        save_imported(store, [broken], "s1")
    assert len(list_trait_runs(store)) == 2  # nothing of the refused record was written


def test_trait_runs_and_vectors_travel_in_session_bundles(tiny, cheer, tmp_path):
    from perplex.core.trait_monitoring import MonitoringRecord
    from perplex.workspace.bundles import BundleError, export_bundle, import_bundle
    from perplex.workspace.sessions import create_session
    from perplex.workspace.store import Store
    from perplex.workspace.trait_run_store import (
        list_trait_runs,
        load_trait_run,
        save_imported,
        save_trait_run,
    )
    from perplex.workspace.trait_store import latest_vectors, save_vector

    source = Store.open(tmp_path / "a" / "perplex.duckdb")
    session = create_session(source, "traits")
    save_vector(source, cheer, session.id)
    monitors = [Monitor(cheer, 2)]
    base = monitor_generate(tiny, QUESTION, monitors, DecodeParams(max_new_tokens=6))
    steered = monitor_generate(tiny, QUESTION, monitors, DecodeParams(max_new_tokens=6),
                               steering=[Steering(2, torch.from_numpy(cheer.vector[2]), 4.0,
                                                  name="cheer")])
    save_trait_run(source, base, "baseline", session.id, pair_id="pair")
    save_trait_run(source, steered, "steered", session.id, pair_id="pair")
    save_imported(source, [MonitoringRecord("Q", "A b", ("A", " b"), ("evil",),
                                            np.array([[1.0, -2.0]]))], session.id)
    bundle = export_bundle(source, session.id)

    target = Store.open(tmp_path / "b" / "perplex.duckdb")
    for attempt in range(2):  # the second import gets fresh ids: pairs and links follow
        imported = import_bundle(target, bundle)
        runs = {r.kind: load_trait_run(target, r.id) for r in list_trait_runs(target, imported.id)}
        assert sorted(runs) == ["baseline", "imported", "steered"]
        assert np.array_equal(runs["steered"].run.scores, steered.scores)
        assert runs["steered"].run.steering == steered.steering
        assert runs["baseline"].pair_id == runs["steered"].pair_id
        assert (runs["steered"].pair_id == "pair") == (attempt == 0)
        assert runs["steered"].run.generation.session_id == imported.id
        assert runs["imported"].record.tokens == ("A", " b")
    vector = latest_vectors(target, tiny.info.label, "prompt_last")["cheer"]
    assert np.array_equal(vector.vector, cheer.vector)
    assert len(list((tmp_path / "b" / "vectors").glob("*.safetensors"))) == 2

    def nan_score(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc["runs"][0]["record"]["trait_scores"]["cheer"][0] = "NaN"
        return json.dumps(doc).encode()

    def unknown_generation(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc["runs"][0]["generation_id"] = "elsewhere"
        return json.dumps(doc).encode()

    def broken_vector(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc["vectors"][0]["safetensors"] = doc["vectors"][0]["safetensors"][:40]
        return json.dumps(doc).encode()

    empty = Store.open(tmp_path / "c" / "perplex.duckdb")
    for edit, message in ((nan_score, "not a finite number"),
                          (unknown_generation, "generation is not in the bundle"),
                          (broken_vector, "not a trait vector")):
        with pytest.raises(BundleError, match=message):
            import_bundle(empty, resealed(bundle, "traits.json", edit))
    with empty.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
        assert cur.execute("SELECT count(*) FROM trait_runs").fetchone()[0] == 0
    assert not (tmp_path / "c" / "vectors").exists() or \
        not list((tmp_path / "c" / "vectors").iterdir())


def test_monitoring_exports_keep_token_texts_and_scores(tmp_path):
    from perplex.core.trait_monitoring import MonitoringRecord
    from perplex.workspace.exports import monitoring_frame, monitoring_parquet

    records = [MonitoringRecord("Q", "NA ", ("NA", " "), ("evil", "refusal"),
                                np.array([[0.1, -2.5], [3.0, 1e-7]])),
               MonitoringRecord("Q2", "x", ("x",), ("refusal",), np.array([[4.0]]))]
    frame = monitoring_frame(records, ["a", "b"])
    assert frame.columns.tolist() == ["answer", "index", "token", "evil", "refusal"]
    path = tmp_path / "scores.parquet"
    path.write_bytes(monitoring_parquet(frame))
    back = pd.read_parquet(path)
    assert back["token"].tolist() == ["NA", " ", "x"]
    assert back["refusal"].tolist() == [3.0, 1e-7, 4.0]
    assert back["evil"].tolist()[:2] == [0.1, -2.5] and np.isnan(back["evil"].iloc[2])
    assert back["answer"].tolist() == ["a", "a", "b"]


@pytest.mark.parametrize("baseline", [["x", 1.0, 2.0, 3.0], [1.0], [True, 1.0, 1.0, 1.0]])
def test_a_vector_file_with_a_bad_baseline_is_refused(cheer, baseline):
    from dataclasses import replace

    from perplex.workspace.trait_store import read_vector_file, vector_file_bytes

    bad = replace(cheer, meta={**cheer.meta, "baseline": baseline})
    with pytest.raises(PerplexError, match="baseline"):
        read_vector_file(vector_file_bytes(bad))


def test_a_persona_vectors_import_is_used_below_its_normed_last_row(tiny, cheer):
    """Numbers issue, point 6: persona_vectors' row n is output_hidden_states[n], after the norm.

    Built here as persona_vectors builds it (the mean difference of `output_hidden_states`
    at the prompt's last token), its rows below n equal Perplex's and import unchanged; its
    row n is another space, so monitoring or steering there is refused with the reason.
    """
    import io

    from perplex.workspace.trait_store import import_pt

    pos, neg = prompt_last_by_hand(tiny, output_hidden_states)
    theirs = (torch.stack(pos).double().mean(0) - torch.stack(neg).double().mean(0)).float()
    n = cheer.n_layers
    # float32 passes read two ways: rows below n agree, row n is after the final norm
    np.testing.assert_allclose(theirs[:n].numpy(), cheer.vector[:n], atol=1e-5)
    assert float((theirs[n] - torch.from_numpy(cheer.vector[n])).abs().max()) > 1e-2
    buffer = io.BytesIO()
    torch.save(theirs, buffer)
    imported = import_pt(buffer.getvalue(), "cheer", tiny.info.label, n, 64)
    assert imported.default_layer < n
    params = DecodeParams(max_new_tokens=4)
    with pytest.raises(InputFormatError, match="after the model's final norm"):
        monitor_generate(tiny, QUESTION, [Monitor(imported, n)], params)
    with pytest.raises(InputFormatError, match=f"Use a layer below {n}"):
        imported.row(n)
    mine = monitor_generate(tiny, QUESTION, [Monitor(cheer, n - 1)], params)
    used = monitor_generate(tiny, QUESTION, [Monitor(imported, n - 1)], params)
    np.testing.assert_allclose(used.scores, mine.scores, atol=1e-4)  # the same row, read once
    assert cheer.row(n) is not None  # Perplex's own vectors use every row


@pytest.mark.parametrize(("text", "why"), [
    ("[" * 100_000 + "]" * 100_000, "cannot be read safely"),  # RecursionError before
    ('{"instruction": [{"pos": "a", "neg": "b"}], "questions": ["a", "b"], "eval_prompt": "x",'
     ' "n": ' + "9" * 20_000 + "}", "cannot be read safely"),  # ValueError: int digits
    ("[1, 2", "the JSON is malformed"),
])
def test_a_trait_or_monitor_file_nested_too_deeply_or_with_a_huge_integer_is_a_message(text,
                                                                                       why):
    """Hardening issue, point 7: both readers raised RecursionError / ValueError."""
    with pytest.raises(InputFormatError, match=f"The mine trait file cannot be used: .*{why}"):
        parse_trait("mine", text)
    with pytest.raises(InputFormatError, match=f"This monitor file cannot be used: .*{why}"):
        parse_monitoring(text.encode())
