"""The Batch page (AppTest, tiny model): create, run, filter, read, bad input."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from perplex.core.settings import PROJECT_ROOT, load_settings
from perplex.workspace.store import Store
from tests.tiny import tiny_model


@pytest.fixture(scope="module")
def tiny_lm_for_pages():
    return tiny_model(seed=0, layers=2)


@pytest.fixture
def app(tiny_lm_for_pages):
    st.cache_resource.clear()
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "batch.py"), default_timeout=300)
    at.session_state["perplex.lm"] = tiny_lm_for_pages
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def test_paste_run_filter_and_read(app):
    at = app.run()
    assert not at.exception, at.exception
    at.number_input(key="batch.max_new").set_value(6)
    at.text_area(key="batch.pasted").set_value("\n".join(f"Prompt {i}: hello" for i in range(20)))
    at.run()
    button(at, "Create the batch and run it").click().run()
    assert not at.exception, at.exception
    with Store.open(load_settings().database) as store, store.cursor() as cur:
        assert cur.execute("SELECT count(*), count(*) FILTER (WHERE status = 'done') "
                           "FROM batch_items").fetchall() == [(20, 20)]
    assert any("20 of 20 items" in m.value for m in at.markdown)
    # every flag has its count, the repetition flag (seq-rep-4 ≥ 0.25) among them
    assert "repetition \\(loop\\)" in [m.label for m in at.metric]  # markdown-escaped
    at.selectbox(key="batch.col0").set_value("n_tokens").run()
    at.selectbox(key="batch.op0.n_tokens").set_value(">").run()
    at.text_input(key="batch.value0.n_tokens").set_value("100").run()
    assert not at.exception, at.exception
    assert any(m.value.startswith("**0 of 20 items**") for m in at.markdown)
    at.text_input(key="batch.value0.n_tokens").set_value("0").run()
    assert any(m.value.startswith("**20 of 20 items**") for m in at.markdown)
    assert any(m.value.startswith("**Item 1 of 20**") for m in at.markdown)
    button(at, "Next").click().run()
    assert any(m.value.startswith("**Item 2 of 20**") for m in at.markdown)
    assert not at.exception, at.exception


def test_a_flag_in_sql_is_added_and_a_bad_one_named(app):
    at = app.run()
    at.number_input(key="batch.max_new").set_value(4)
    at.text_area(key="batch.pasted").set_value("One\nTwo\nThree")
    at.run()
    button(at, "Create the batch and run it").click().run()
    at.text_input(key="batch.custom_name").set_value("short")
    at.text_area(key="batch.custom_sql").set_value("n_tokens <= 4 AND idx < 2")
    button(at, "Add the flag").click().run()
    assert not at.exception, at.exception
    assert any(m.label == "short" and m.value == "2" for m in at.metric)
    at.text_input(key="batch.custom_name").set_value("files")
    at.text_area(key="batch.custom_sql").set_value(
        "idx IN (SELECT 1 FROM read_text('/etc/passwd'))")
    button(at, "Add the flag").click().run()
    assert any("Permission Error" in e.value for e in at.error)
    assert not any(m.label == "files" for m in at.metric)


def test_a_sample_dataset_runs_as_a_batch(app):
    at = app.run()
    at.number_input(key="batch.max_new").set_value(3)
    at.selectbox(key="batch.dataset").set_value("sample:mmlu").run()
    button(at, "Create the batch and run it").click().run()
    assert not at.exception, at.exception
    with Store.open(load_settings().database) as store, store.cursor() as cur:
        [(name, n, done, refs)] = cur.execute(
            "SELECT b.name, count(*), count(*) FILTER (WHERE i.status = 'done'), "
            "count(i.reference) FROM batches b JOIN batch_items i ON i.batch_id = b.id "
            "GROUP BY b.name").fetchall()
    assert name.startswith("sample: MMLU") and n == done == refs > 0


def test_the_divergence_flag_with_a_second_model(app, tiny_lm_for_pages, monkeypatch):
    from perplex.engine.local.engine import LocalEngine
    from perplex.ui.shell import model_choice

    second = LocalEngine(tiny_model(seed=1, layers=2, tokenizer=tiny_lm_for_pages.tokenizer))
    # the picker would prepare the bundled model's fine-tune; a second tiny model stands in
    monkeypatch.setattr(model_choice, "local_engine", lambda choice, source="": second)
    at = app.run()
    at.toggle(key="batch.use_second").set_value(True).run()
    at.number_input(key="batch.max_new").set_value(3)
    at.text_area(key="batch.pasted").set_value("One\nTwo")
    at.run()
    button(at, "Create the batch and run it").click().run()
    assert not at.exception, at.exception
    with Store.open(load_settings().database) as store, store.cursor() as cur:
        values = [v for (v,) in cur.execute("SELECT divergence FROM batch_items").fetchall()]
    assert len(values) == 2 and all(v is not None and v > 0 for v in values)


@pytest.mark.slow  # ingests and scores 250 transcripts
def test_a_big_batch_sends_the_table_one_page_at_a_time(app, tmp_path):
    """250 finished transcripts: the table holds 100 rows a page, the reader all 250."""
    from bench.datasets import ingest
    from perplex.ui.shell.session_panel import SESSION_KEY
    from perplex.workspace.sessions import create_session

    with Store.open(load_settings().database) as store:
        session = create_session(store, "Big batch")
        batch_id, _, _ = ingest(store, 250, session_id=session.id)
    app.session_state[SESSION_KEY] = session.id
    at = app.run()
    assert not at.exception, at.exception
    assert any(m.value.startswith("**250 of 250 items**") for m in at.markdown)
    [table] = [d for d in at.dataframe if "answer" in d.value.columns]
    assert list(table.value["#"]) == list(range(100))
    [page] = [n for n in at.number_input if n.label == "Page (of 3)"]
    page.set_value(3).run()
    [table] = [d for d in at.dataframe if "answer" in d.value.columns]
    assert list(table.value["#"]) == list(range(200, 250))
    assert any("Items 201–250 of 250" in c.value for c in at.caption)
    assert any(m.value.startswith("**Item 1 of 250**") for m in at.markdown)
    assert not at.exception, at.exception
