"""The bundled model's copies: the fine-tune is deterministic, int8 rounding is as defined."""

from __future__ import annotations

import torch

from perplex.engine.local.variants import (
    TERSE_DATA,
    FineTune,
    finetuned_copy,
    int8_rounded,
    read_pairs,
    weights_hash,
)
from tests.tiny import tiny_model

PLAN = FineTune(steps=3, batch_size=4, trained_blocks=1, learning_rate=1e-3)


def saved_tiny(folder):
    lm = tiny_model()
    lm.model.save_pretrained(folder, safe_serialization=True)
    lm.tokenizer.save_pretrained(folder)
    return folder


def test_the_fine_tune_is_deterministic_for_a_seed_and_changes_the_weights(tmp_path):
    base = saved_tiny(tmp_path / "base")
    first = finetuned_copy(base, TERSE_DATA, tmp_path / "one", PLAN)
    again = finetuned_copy(base, TERSE_DATA, tmp_path / "two", PLAN)
    other = finetuned_copy(base, TERSE_DATA, tmp_path / "three",
                           FineTune(**{**PLAN.__dict__, "seed": 1}))
    assert weights_hash(first) == weights_hash(again)  # same seed, same weights
    assert weights_hash(other) != weights_hash(first)
    assert weights_hash(first) != weights_hash(base)
    assert finetuned_copy(base, TERSE_DATA, tmp_path / "one", PLAN) == first  # kept, not redone


def test_the_terse_data_is_question_and_one_line_answer():
    pairs = read_pairs(TERSE_DATA)
    assert len(pairs) >= 40
    assert all(len(answer.split()) <= 8 and "\n" not in answer for _, answer in pairs)


def test_int8_rounding_by_hand():
    weight = torch.tensor([[0.5, -1.27, 0.0], [0.01, 0.02, -0.04]])
    rounded = int8_rounded(weight)
    scale = torch.tensor([[1.27 / 127], [0.04 / 127]])
    assert torch.equal(rounded, torch.round(weight / scale).clamp(-127, 127) * scale)
    assert torch.all((rounded - weight).abs() <= scale / 2 + 1e-9)  # at most half a step
    assert rounded[0, 1] == -1.27 and rounded[1, 2] == -0.04  # the extremes are exact
