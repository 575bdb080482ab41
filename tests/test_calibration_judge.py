"""LLM-as-judge: the local judge against direct logits, an endpoint judging, one failing.

A judge endpoint that fails mid-run leaves the items so far kept and the run resumable.
"""

from __future__ import annotations

import pytest
import torch

from perplex.core.calibration import Dataset
from perplex.core.errors import GenerationError, InputFormatError
from perplex.core.records import Message
from perplex.engine import LocalEngine
from perplex.engine.local.models import bundled_gguf_path
from perplex.engine.openai_compat import EndpointEngine
from perplex.modes.calibration.datasets import sample_dataset
from perplex.modes.calibration.judge import JUDGE_PROMPT, check_judge_prompt, judge
from perplex.modes.calibration.run import answer_item, answer_items
from perplex.modes.calibration.token_confidence import spelling_ids
from perplex.workspace.calibration_store import (
    create_run,
    load_results,
    save_dataset,
    save_result,
)
from perplex.workspace.store import Store
from tests.endpoints import LlamaServer
from tests.tolerances import FLOAT32_PROB

pytestmark = pytest.mark.slow


def test_the_local_judges_probability_is_p_yes_over_yes_and_no(bundled_lm):
    engine = LocalEngine(bundled_lm)
    verdict = judge(engine, "What is the capital of France?", ("Paris",), "Paris")
    text = (JUDGE_PROMPT.replace("{question}", "What is the capital of France?")
            .replace("{references}", "Paris").replace("{answer}", "Paris"))
    ids = list(engine.encode((Message("user", text),), True).ids)
    with torch.no_grad():
        probs = torch.softmax(bundled_lm.model(torch.tensor([ids])).logits[0, -1].double(),
                              -1).numpy()
    yes, no = (probs[spelling_ids(engine, w)].sum() for w in ("Yes", "No"))
    assert abs(verdict.p_correct - yes / (yes + no)) <= FLOAT32_PROB  # two forward passes
    assert verdict.correct == (verdict.p_correct >= 0.5)


def test_a_judge_prompt_must_name_its_fields():
    with pytest.raises(InputFormatError, match=r"\{question\}, \{references\} and \{answer\}"):
        check_judge_prompt("Is {answer} right?")


def test_an_endpoint_judges_and_a_failing_judge_keeps_the_run_resumable(bundled_lm, tmp_path):
    engine = LocalEngine(bundled_lm)
    items = sample_dataset("trivia").items[:3]
    server = LlamaServer(bundled_gguf_path(), tmp_path / "judge.log")
    server.wait()
    judge_engine = EndpointEngine(server.base_url, server.model, timeout=30)
    with Store.open(tmp_path / "perplex.duckdb") as store:
        dataset = Dataset("three", items)
        save_dataset(store, dataset)
        run_id = create_run(store, dataset.id, bundled_lm.label, {})
        runs = answer_items(engine, items, judge_engine=judge_engine)
        try:
            generation, result = next(runs)  # the first item, judged by the endpoint
            save_result(store, run_id, 0, result, generation)
            assert result.judged is not None  # the bundled model replies Yes or No
            assert result.judge_p is None or 0 <= result.judge_p <= 1
        finally:
            server.stop()  # the judge goes away mid-run
        with pytest.raises(GenerationError, match=r"Item px_trivia_002: .*cannot be reached"):
            next(runs)
        assert [r.item_id for r in load_results(store, run_id)] == ["px_trivia_001"]
        # resumed with a judge that answers (the local model): the rest is done
        done = {r.item_id for r in load_results(store, run_id)}
        for n, item in enumerate(items):
            if item.id not in done:
                generation, result = answer_item(engine, item, judge_engine=engine)
                save_result(store, run_id, n, result, generation)
        results = load_results(store, run_id)
        assert [r.item_id for r in results] == [i.id for i in items]
        assert all(r.judge_p is not None for r in results[1:])
