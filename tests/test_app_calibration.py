"""The Calibration page (AppTest, bundled model): a run, its metrics, a verdict overruled."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from perplex.core.settings import PROJECT_ROOT
from tests.shown import shown

pytestmark = pytest.mark.slow


def _app(lm) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "calibration.py"), default_timeout=300)
    at.session_state["perplex.lm"] = lm
    return at


def test_a_run_on_the_sample_shows_metrics_and_a_verdict_changes_them(bundled_lm):
    at = _app(bundled_lm).run()
    assert not at.exception
    assert any("105 items" in c.value for c in at.caption)
    at.number_input(key="calib.limit").set_value(3).run()
    at.button(key="calib.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert {"span product", "span geometric mean", "first token"} <= set(table["confidence"])
    assert max(table["items"]) == 3 and any("Accuracy" in c.value for c in at.caption)
    # a kind is measured on the items that have it; the rest are counted as missing
    assert all(n + m == 3 for n, m in zip(table["items"], table["missing"]))
    before = table.set_index("confidence")["ECE (equal width)"].to_dict()
    items = at.dataframe[1].value
    assert len(items) == 3 and items.iloc[0]["question"] == "What is the capital of France?"
    # overrule the first item's verdict by hand: every metric moves with it
    at.session_state["calib.items." + at.session_state["calib.shown_run"] + ".3"] = {
        "selection": {"rows": [0], "columns": []}}
    at.run()
    verdict_key = next(r.key for r in at.radio if r.key and r.key.startswith("calib.verdict."))
    automatic = at.radio(key=verdict_key).value
    flipped = "wrong" if "right)" in automatic else "right"
    at.radio(key=verdict_key).set_value(flipped).run()
    assert not at.exception
    after = at.dataframe[0].value.set_index("confidence")["ECE (equal width)"].to_dict()
    assert after != before
    assert any("1 verdicts set by hand" in c.value or "(1 verdicts set by hand)" in c.value
               for c in at.caption)


def test_an_upload_with_missing_columns_is_named(bundled_lm):
    at = _app(bundled_lm).run()
    at.radio(key="calib.source").set_value("upload a dataset").run()
    assert not at.exception
    assert at.get("file_uploader")  # the uploader is there; reading is tested in the core


def test_a_run_judged_by_the_local_model_records_the_judges_verdicts(bundled_lm):
    at = _app(bundled_lm).run()
    at.number_input(key="calib.limit").set_value(2).run()
    at.radio(key="calib.judge").set_value("local").run()
    assert any("{question}, {references}, {answer}" in t.label for t in at.text_area)
    at.button(key="calib.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    items = at.dataframe[1].value
    assert {"match", "judge", "judge p"} <= set(items.columns)
    assert items["judge p"].between(0, 1).all() and items["judge"].notna().all()
    # the verdict the metrics use is the judge's
    assert list(items["correct"]) == list(items["judge"])


def test_an_endpoint_judges_and_its_key_is_never_stored(bundled_lm, llama_server,
                                                        perplex_home):
    from tests.conftest import LLAMA_KEY

    at = _app(bundled_lm).run()
    at.number_input(key="calib.limit").set_value(1).run()
    at.radio(key="calib.judge").set_value("endpoint").run()
    at.text_input(key="calib.judge_url").input(llama_server.base_url)
    at.text_input(key="calib.judge_model").input(llama_server.model)
    at.text_input(key="calib.judge_api_key").input(LLAMA_KEY).run()
    at.button(key="calib.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    items = at.dataframe[1].value
    assert items["judge"].notna().all()  # the bundled model on llama.cpp said Yes or No
    written = [f.read_bytes() for f in perplex_home.rglob("*") if f.is_file()]
    assert written and not any(LLAMA_KEY.encode() in data for data in written)  # db and WAL


def test_a_prompt_preset_changes_what_is_asked(bundled_lm, perplex_home):
    from perplex.workspace.store import Store

    at = _app(bundled_lm).run()
    at.number_input(key="calib.limit").set_value(1).run()
    at.selectbox(key="calib.preset_prompt").set_value("confidence in words").run()
    at.button(key="calib.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from perplex.workspace.calibration_store import load_results

    with Store.open(perplex_home / "perplex.duckdb") as store:
        [result] = load_results(store, at.session_state["calib.runs.job"])
        asked = store.load_generation(result.generation_id).messages[0].content
    assert "in words (certain, very likely" in asked


def test_another_local_model_judges_through_the_registry(bundled_lm):
    at = _app(bundled_lm).run()
    at.number_input(key="calib.limit").set_value(1).run()
    at.radio(key="calib.judge").set_value("model").run()
    at.button(key="calib.run").click().run()  # empty source: the bundled model, loaded again
    assert not at.exception and not at.error, [e.value for e in at.error]
    items = at.dataframe[1].value
    assert items["judge p"].between(0, 1).all()


def test_a_judge_model_that_cannot_load_is_named_and_nothing_is_lost(bundled_lm, tmp_path):
    at = _app(bundled_lm).run()
    at.number_input(key="calib.limit").set_value(1).run()
    at.radio(key="calib.judge").set_value("model").run()
    at.text_input(key="calib.judge_source").input(str(tmp_path / "no-such-model")).run()
    at.button(key="calib.run").click().run()
    assert not at.exception
    assert any(e.value.startswith("No folder at") for e in at.error), [e.value for e in at.error]


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key="calib.source").set_value("upload a dataset").run()
    at.file_uploader(key="calib.upload").set_value((name, data, "application/json")).run()
    return at


def _mapping(at: AppTest) -> dict[str, str]:
    return {s.label: s.value for s in at.selectbox
            if s.key and s.key.startswith(("calib.preset.", "calib.map."))}


def test_an_upload_maps_its_own_fields_and_runs_all_its_items_by_default(bundled_lm):
    """New-user issue, point 8: a new file's fields choose its mapping.

    After an MMLU-shaped file the mapping stayed on TriviaQA with choices and answer
    "(none)"; the old file's caption stayed; 20 of 30 items ran by default.
    """
    at = _app(bundled_lm).run()
    assert at.number_input(key="calib.limit").value == 105  # the sample: all of it
    mmlu = (PROJECT_ROOT / "data" / "calibration" / "mmlu_sample.jsonl").read_bytes()
    _upload(at, "mine.jsonl", mmlu)
    assert not at.exception
    mapping = _mapping(at)
    assert mapping["Fields as in"] == "MMLU"
    assert (mapping["choices"], mapping["answer index or letter"]) == ("choices", "answer")
    assert not any("items" in c.value for c in at.caption)  # no caption before it is used
    at.button(key="calib.use").click().run()
    n = len(mmlu.splitlines())
    assert any(f"mine.jsonl: {n} items (multiple choice)" in shown(c.value) for c in at.caption)
    assert at.number_input(key="calib.limit").value == n

    trivia = (PROJECT_ROOT / "data" / "calibration" / "trivia_sample.jsonl").read_bytes()
    at.file_uploader(key="calib.upload").set_value(
        ("other.jsonl", trivia, "application/json")).run()
    mapping = _mapping(at)
    assert mapping["Fields as in"] == "TriviaQA (rc.nocontext)"
    assert mapping["choices"] == "(none)" and mapping["aliases"] == "answer.aliases"
    assert not any("mine.jsonl" in shown(c.value) for c in at.caption)  # the old one's is gone
