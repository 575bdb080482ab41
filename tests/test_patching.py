"""Activation patching: no-op patches, sweeps vs single patches, the Eiffel Tower swap.

No-op patches change nothing, sweeps agree with single patches, and on the bundled model
the Eiffel Tower → Colosseum swap flips the target's answer.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from perplex.core.tokens import TextPrefix, encode_plain_text
from perplex.engine.local.models import LoadedModel, ModelSpec
from perplex.engine.nnsight_adapter import (
    capture_residuals,
    patched_last_residual,
)
from perplex.engine.protocol import ResidualPatch
from perplex.engine.registry import local_engine
from perplex.lens.logit_lens import LensError
from perplex.lens.patching import (
    aligned_source_position,
    patch_prompts,
    patch_sweep,
    sweep_from_rows,
    sweep_rows,
    unpatched_logits,
)
from tests.tiny import ARCHITECTURES, tiny_tokenizer
from tests.tolerances import FLOAT32_LOGIT, FLOAT32_PROB

SOURCE = "The Eiffel Tower is in the city of"
TARGET = "The Colosseum is in the city of"


def _ids(lm, text: str, prefix: TextPrefix | None = None) -> list[int]:
    return list(encode_plain_text(lm.tokenizer, text, prefix).ids)


def test_unpatched_run_equals_model_logits(tiny_lm):
    ids = _ids(tiny_lm, "The capital of France is Paris.")
    with torch.no_grad():
        expected = tiny_lm.model(torch.tensor([ids])).logits[0, -1]
    # a hooked pass against a plain one
    got = unpatched_logits(local_engine(tiny_lm), ids)
    assert torch.allclose(got, expected, atol=FLOAT32_LOGIT)


def test_patching_a_prompt_into_itself_changes_nothing(tiny_lm):
    ids = _ids(tiny_lm, "Hello world! How are you today?")
    result = patch_prompts(local_engine(tiny_lm), ids, ids, layer=1, target_position=2)
    assert np.array_equal(result.before_ids, result.after_ids)
    assert np.allclose(result.before_probs, result.after_probs, atol=FLOAT32_PROB)


def test_sweep_agrees_with_single_patches_and_the_last_cell_is_the_source(tiny_lm):
    source = _ids(tiny_lm, "The capital of France is Paris.")
    target = _ids(tiny_lm, "Hello world! How are you today?")[:len(source)]
    # several passes per layer
    sweep = patch_sweep(local_engine(tiny_lm), source, target, rows_per_pass=3)
    n_layers = tiny_lm.n_layers + 1
    assert sweep.p_source.shape == (n_layers, len(target))
    for layer, position in [(0, 0), (1, 4), (2, len(target) - 1)]:
        single = patch_prompts(local_engine(tiny_lm), source, target, layer=layer,
                               target_position=position)
        assert abs(single.p_source_after - sweep.p_source[layer, position]) < FLOAT32_PROB
        assert abs(single.p_target_after - sweep.p_target[layer, position]) < FLOAT32_PROB
        assert int(single.after_ids[0]) == sweep.top1[layer, position]
    # The last block's output at the last position is all the prediction reads.
    assert sweep.top1[-1, -1] == sweep.source_answer
    with torch.no_grad():
        own = tiny_lm.model(torch.tensor([source])).logits[0, -1].softmax(-1)
    assert abs(float(own[sweep.source_answer]) - sweep.p_source[-1, -1]) < FLOAT32_PROB
    assert sweep.figure().data and sweep.figure("logit_diff").data


def test_a_sweep_rebuilt_from_stored_layer_rows_is_the_sweep(tiny_lm):
    """A stopped sweep keeps its layers as rows (JSON); the rows rebuild the same grids."""
    engine = local_engine(tiny_lm)
    source = _ids(tiny_lm, "The capital of France is Paris.")
    target = _ids(tiny_lm, "Hello world! How are you today?")[:len(source)]
    whole = patch_sweep(engine, source, target)
    rows = {}
    for layer in (2, 0):  # swept in chunks of layers, in any order, as the runner does
        part = patch_sweep(engine, source, target, layers=[layer])
        rows[layer] = json.loads(json.dumps(sweep_rows(part, layer), allow_nan=False))
    rebuilt = sweep_from_rows(engine, source, target, rows)
    for name in ("p_source", "p_target", "logit_diff", "top1"):
        got, want = getattr(rebuilt, name), getattr(whole, name)
        # the same forward pass for each layer, whichever other layers ran: exact
        assert np.array_equal(got[[0, 2]], want[[0, 2]]), name
    assert np.isnan(rebuilt.p_source[1]).all() and (rebuilt.top1[1] == -1).all()
    assert set(rebuilt.texts) >= {int(i) for i in whole.top1[[0, 2]].ravel()}


def test_prompts_of_different_lengths_align_from_the_end(tiny_lm):
    source = _ids(tiny_lm, "The capital of France is Paris.")
    target = source[2:]
    assert aligned_source_position(0, len(source), len(target)) == 2
    assert aligned_source_position(0, len(target), len(source)) is None
    sweep = patch_sweep(local_engine(tiny_lm), target, source, layers=[1])
    assert np.isnan(sweep.p_source[1, :2]).all() and not np.isnan(sweep.p_source[1, 2:]).any()
    assert np.isnan(sweep.p_source[0]).all()  # layer 0 was not swept
    with pytest.raises(LensError, match="no source position"):
        patch_prompts(local_engine(tiny_lm), target, source, layer=1, target_position=0)
    with pytest.raises(LensError, match="does not exist"):
        patch_prompts(local_engine(tiny_lm), source, target, layer=99, target_position=0)


@pytest.fixture(scope="module")
def swap(bundled_lm):
    """The Eiffel Tower (source) and Colosseum (target) prompts, both ten tokens."""
    source, target = _ids(bundled_lm, SOURCE), _ids(bundled_lm, TARGET)
    assert len(source) == len(target) == 10
    return source, target


def test_bundled_unpatched_run_equals_model_logits(bundled_lm, swap):
    with torch.no_grad():
        expected = bundled_lm.model(torch.tensor([swap[1]])).logits[0, -1]
    assert torch.allclose(unpatched_logits(local_engine(bundled_lm), swap[1]), expected,
                          atol=FLOAT32_LOGIT)


def test_bundled_swap_subject_at_a_middle_layer_flips_rome_to_paris(bundled_lm, swap):
    source, target = swap
    tokens = [bundled_lm.vocab_texts[i] for i in target]
    assert tokens[2:5] == [" Col", "osse", "um"]
    # Found by a full sweep: the residual of the subject's middle token ("iffel" → "osse")
    # flips the answer when patched at layers 0–23 (after end-of-text); the last subject token
    # ("Tower" → "um") never does; the final position does from layer 24 on.
    result = patch_prompts(local_engine(bundled_lm), source, target, layer=12, target_position=3)
    text = result.texts
    assert text[result.source_answer] == " Paris" and text[result.target_answer] == " Rome"
    assert text[int(result.before_ids[0])] == " Rome"
    assert result.flipped and text[int(result.after_ids[0])] == " Paris"
    assert result.verdict == "flips to the source's answer"
    assert result.p_source_after > result.p_source_before
    assert result.p_target_after < result.p_target_before

    sweep = patch_sweep(local_engine(bundled_lm), source, target, layers=[12, 27])
    assert sweep.top1[12, 3] == result.source_answer
    assert abs(sweep.p_source[12, 3] - result.p_source_after) < FLOAT32_PROB
    assert sweep.top1[12, 4] == result.target_answer  # the last subject token: still Rome
    assert sweep.top1[27, 9] == result.source_answer  # late layers: the final position
    assert sweep.top1[12, 9] == result.target_answer
    kept = patch_prompts(local_engine(bundled_lm), source, target, layer=12, target_position=4)
    assert kept.verdict == "keeps its own answer"
    # New-user issue, point 9: a top-1 that is neither answer read "keeps another answer"
    other = int(result.before_ids[1])  # the unpatched runner-up, neither Rome nor Paris
    assert other not in (result.source_answer, result.target_answer)
    moved = dataclasses.replace(result, after_ids=np.array([other]))
    assert moved.verdict == f"changes to another token, “{text[other].replace(' ', '·')}”"


def full_pass_grid(lm, source: list[int], target: list[int], layers) -> tuple[np.ndarray, ...]:
    """The sweep the plain way: each layer's patches in one full batched forward pass.

    Returns (p(source answer), top-1), each [len(layers), T], for same-length prompts.
    """
    anatomy = lm.anatomy
    source_res = capture_residuals(anatomy.decoder, anatomy.layers_path, torch.tensor([source]))
    head = lm.model.get_output_embeddings()

    def logits(last: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = head(anatomy.final_norm(last[:, -1].to(anatomy.norm_dtype))).float()
        return torch.tanh(z / anatomy.softcap) * anatomy.softcap if anatomy.softcap else z

    answer = int(logits(source_res[-1][None]).argmax())
    p_source, top1 = [], []
    for layer in layers:
        patches = tuple(ResidualPatch(layer, t, source_res[layer, t], row=t)
                        for t in range(len(target)))
        z = logits(patched_last_residual(anatomy.decoder, anatomy.layers_path,
                                         torch.tensor([target] * len(target)), patches))
        p_source.append(z.softmax(-1)[:, answer].numpy())
        top1.append(z.argmax(-1).numpy())
    return np.array(p_source), np.array(top1)


def assert_sweep_equals_full_passes(lm, source, target, layers) -> None:
    sweep = patch_sweep(local_engine(lm), source, target, layers=layers)
    p_source, top1 = full_pass_grid(lm, source, target, layers)
    assert np.array_equal(sweep.top1[layers], top1)
    assert np.abs(sweep.p_source[layers] - p_source).max() < FLOAT32_PROB


@pytest.mark.parametrize("arch", ["llama", *sorted(ARCHITECTURES)])
def test_resumed_sweep_equals_full_forward_passes(arch, tiny_lm):
    """Resuming the target's clean pass at the patched layer gives the full passes' grid."""
    if arch == "llama":
        lm = tiny_lm
    else:
        tokenizer = tiny_tokenizer()
        torch.manual_seed(1)
        model = ARCHITECTURES[arch](len(tokenizer)).eval().requires_grad_(False)
        lm = LoadedModel(ModelSpec(source=f"tiny-{arch}"), model, tokenizer, load_seconds=0.0)
    # BOS, not end-of-text: that is the tiny tokenizer's padding, zero in some embeddings
    source = _ids(lm, "The capital of France is Paris.", TextPrefix.BOS)
    target = _ids(lm, "Hello world! How are you today?", TextPrefix.BOS)[:len(source)]
    assert_sweep_equals_full_passes(lm, source, target, list(range(lm.n_layers + 1)))


def test_bundled_resumed_sweep_equals_full_forward_passes(bundled_lm, swap):
    # The clean pass runs at batch size 1 and the full passes at 10: float32 rounding of
    # the unpatched blocks differs by ~1e-6 relative; probabilities agree to 2e-6 here.
    assert_sweep_equals_full_passes(bundled_lm, *swap, [0, 1, 12, 29, 30])
