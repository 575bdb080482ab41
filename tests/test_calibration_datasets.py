"""Datasets: the shipped samples, the presets, field mapping and what bad files get."""

from __future__ import annotations

import json

import pytest

from perplex.core.errors import InputFormatError
from perplex.modes.calibration.datasets import (
    PRESETS,
    FieldMap,
    build_dataset,
    field_names,
    read_records,
    sample_dataset,
)


def test_the_shipped_samples_are_large_enough_and_clean():
    trivia, mmlu = sample_dataset("trivia"), sample_dataset("mmlu")
    assert len(trivia.items) >= 100 and len(mmlu.items) >= 40
    assert all(item.aliases and not item.multiple_choice for item in trivia.items)
    assert all(len(item.choices) == 4 and item.aliases == (item.choices[item.answer_index],)
               for item in mmlu.items)
    first = trivia.items[0]
    assert first.id == "px_trivia_001" and first.aliases[0] == "Paris"


def test_triviaqa_shape_with_nested_fields():
    rows = [{"question_id": "tc_1", "question": "Who wrote Hamlet?",
             "answer": {"value": "Shakespeare", "aliases": ["William Shakespeare",
                                                            "Shakespeare"]}}]
    data = json.dumps(rows).encode()
    records = read_records("trivia.json", data)
    assert "answer.aliases" in field_names(records)
    [item] = build_dataset("t", records, PRESETS["TriviaQA (rc.nocontext)"]).items
    assert item.aliases == ("Shakespeare", "William Shakespeare")  # repeats dropped


def test_a_csv_with_a_mapping_letters_and_listed_choices():
    csv = ("id,q,opts,key\n"
           'a,"2 + 2?","[""3"", ""4"", ""5"", ""6""]",B\n'
           "b,Capital of Peru?,Quito | Lima | La Paz | Bogotá,1\n").encode()
    rows = read_records("mc.csv", csv)
    items = build_dataset("mc", rows, FieldMap(question="q", choices="opts",
                                               answer_index="key", id="id")).items
    assert [(i.id, i.answer_index, i.aliases) for i in items] == [("a", 1, ("4",)),
                                                                  ("b", 1, ("Lima",))]


def test_missing_columns_are_named_with_those_present():
    rows = read_records("x.jsonl", b'{"q": "Why?", "a": "Because"}\n')
    with pytest.raises(InputFormatError, match=r"No row has the columns 'question', "
                                               r"'answer.value'.* Present: q, a"):
        build_dataset("x", rows, PRESETS["TriviaQA (rc.nocontext)"])


def test_empty_answers_and_bad_indices_name_their_rows():
    rows = [{"question": "A?", "answer": "a"}, {"question": "B?", "answer": " "},
            {"question": "", "answer": "c"}, {"question": "D?", "answer": ""}]
    with pytest.raises(InputFormatError, match=r"no question in row 3; no answer in rows 2, 4"):
        build_dataset("x", rows, FieldMap(question="question", answer="answer"))
    mc = [{"question": "Q?", "choices": ["x", "y"], "answer": 2}]
    with pytest.raises(InputFormatError, match="bad answer index in row 1"):
        build_dataset("x", mc, PRESETS["MMLU"])


def test_duplicate_ids_are_refused_by_name():
    rows = [{"id": "q1", "question": "A?", "answer": "a"},
            {"id": "q1", "question": "B?", "answer": "b"},
            {"id": "q2", "question": "C?", "answer": "c"}]
    with pytest.raises(InputFormatError, match="Ids repeat: q1"):
        build_dataset("x", rows, FieldMap(question="question", answer="answer", id="id"))
    numbered = build_dataset("x", rows, FieldMap(question="question", answer="answer"))
    assert [i.id for i in numbered.items] == ["row 1", "row 2", "row 3"]


def test_bad_files_get_clear_messages():
    with pytest.raises(InputFormatError, match="x.csv: the file is empty"):
        read_records("x.csv", b"")
    with pytest.raises(InputFormatError, match="x.jsonl: the JSON is malformed: .* line 2"):
        read_records("x.jsonl", b'{"question": "a"}\n{"question": \n')
    with pytest.raises(InputFormatError, match="x.parquet: its type .parquet"):
        read_records("x.parquet", b"PAR1")
    with pytest.raises(InputFormatError, match="one object per question"):
        read_records("x.json", b"[1, 2]")
    big = b"".join(b'{"question": "q%d", "answer": "a"}\n' % i for i in range(30))
    with pytest.raises(InputFormatError, match="has 30 rows; Perplex takes at most 20"):
        read_records("x.jsonl", big, max_items=20)
    with pytest.raises(InputFormatError, match="over the"):
        read_records("x.jsonl", big, max_bytes=100)


def test_a_fifty_thousand_row_file_is_read_and_stored_whole(tmp_path):
    from perplex.workspace.calibration_store import load_dataset, save_dataset
    from perplex.workspace.store import Store

    data = "".join(json.dumps({"question_id": f"q{i}", "question": f"Question {i}?",
                               "answer": {"value": f"a{i}", "aliases": [f"a{i}", f"b{i}"]}})
                   + "\n" for i in range(50_000)).encode()
    dataset = build_dataset("big", read_records("big.jsonl", data),
                            PRESETS["TriviaQA (rc.nocontext)"])
    with Store.open(tmp_path / "perplex.duckdb") as store:
        save_dataset(store, dataset)
        assert load_dataset(store, dataset.id) == dataset


def test_a_files_fields_choose_its_preset():
    """New-user issue, point 8: the mapping follows the uploaded file's shape."""
    from perplex.modes.calibration.datasets import detect_preset

    trivia = ["question_id", "question", "answer", "answer.value", "answer.aliases"]
    assert detect_preset(trivia) == "TriviaQA (rc.nocontext)"
    assert detect_preset(["qid", *trivia[1:]]) == "TriviaQA (rc.nocontext)"  # id named otherwise
    assert detect_preset(["question", "choices", "answer"]) == "MMLU"
    assert detect_preset(["prompt", "target"]) is None  # the user maps it


@pytest.mark.parametrize(("data", "message"), [
    (b"question,answer\n" + b"q" * 140_000 + b",a\n", "field larger than field limit"),
    (b"question,answer\n" + b'"' + b"[" * 200_000 + b'",a\n', "field larger than field limit"),
])
def test_a_csv_field_over_the_csv_modules_limit_is_a_message(data, message):
    """Hardening issue, point 7: a 128 KB CSV field ended in a traceback (csv.Error)."""
    with pytest.raises(InputFormatError, match=f"big.csv: the CSV cannot be read.*{message}"):
        read_records("big.csv", data)


def test_a_list_cell_nested_too_deeply_reads_as_no_list():
    """A CSV cell of 50,000 "[" is not a JSON list: no choices, no traceback (RecursionError)."""
    rows = read_records("deep.csv", b'question,answer,aliases\nq,a,"' + b"[" * 50_000 + b'"\n')
    fields = FieldMap(question="question", answer="answer", aliases="aliases")
    assert build_dataset("deep", rows, fields).items[0].aliases == ("a",)


def test_an_alias_that_reads_as_a_missing_value_stays_text_through_the_store(tmp_path):
    """Hardening issue, point 9: the alias "nan" is text (as are "NaN", "None", "null", "")."""
    from perplex.modes.calibration.answers import match_aliases
    from perplex.workspace.calibration_store import load_dataset, save_dataset
    from perplex.workspace.store import Store

    rows = read_records("odd.csv", b"question,answer,aliases\n"
                                   b"Not a number?,nan,NaN|None|null\nNothing?,None,\n")
    fields = FieldMap(question="question", answer="answer", aliases="aliases")
    dataset = build_dataset("odd", rows, fields)
    with Store.open(tmp_path / "c.duckdb") as store:
        save_dataset(store, dataset)
        back = load_dataset(store, dataset.id)
    assert [item.aliases for item in back.items] == [("nan", "NaN", "None", "null"), ("None",)]
    assert match_aliases("NaN.", back.items[0].aliases).correct
    assert match_aliases("none", back.items[1].aliases).correct
