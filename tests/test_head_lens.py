"""The per-head lens against independent computations: heads add up to the attention output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perplex.core.tokens import encode_plain_text
from perplex.engine.registry import local_engine
from perplex.lens.heads import head_lens, head_vectors
from perplex.lens.logit_lens import LensError
from tests.tolerances import FLOAT32_LOGIT


def _attention_outputs(lm, ids: list[int]) -> list[torch.Tensor]:
    """Each block's attention output [T, d], from plain torch forward hooks (no nnsight)."""
    outputs, hooks = [], []
    for block in lm.model.model.layers:
        hooks.append(block.self_attn.register_forward_hook(
            lambda _m, _i, out: outputs.append(out[0][0].detach().clone())))
    try:
        with torch.no_grad():
            lm.model(torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def test_heads_sum_to_the_attention_output(tiny_lm):
    ids = list(encode_plain_text(tiny_lm.tokenizer, "The capital of France is Paris.").ids)
    position = 5
    vectors, _ = head_vectors(local_engine(tiny_lm), ids, position)
    assert vectors.shape == (tiny_lm.n_layers, 4, 64)
    for layer, attention in enumerate(_attention_outputs(tiny_lm, ids)):
        assert torch.allclose(vectors[layer].sum(0), attention[position], atol=FLOAT32_LOGIT)


def test_head_logits_add_up_to_the_attention_outputs_logit(tiny_lm):
    ids = list(encode_plain_text(tiny_lm.tokenizer, "Hello world! How are you today?").ids)
    position = len(ids) - 1
    lens = head_lens(local_engine(tiny_lm), ids, position)
    model = tiny_lm.model
    captured = []  # the final residual, before the norm: the last block's output
    hook = model.model.layers[-1].register_forward_hook(
        lambda _m, _i, o: captured.append((o[0] if isinstance(o, tuple) else o)[0]))
    try:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, position]
    finally:
        hook.remove()
    assert lens.token_id == int(logits.argmax())
    # By hand: RMSNorm with the final residual's scale, then the token's unembedding row.
    inner = _attention_outputs(tiny_lm, ids)
    norm = model.model.norm
    with torch.no_grad():
        final = captured[0][position]
        rms = torch.sqrt(final.pow(2).mean() + norm.variance_epsilon)
        row = model.lm_head.weight[lens.token_id]
        for layer, attention in enumerate(inner):
            expected = float((norm.weight * attention[position] / rms) @ row)
            assert abs(lens.logit[layer].sum() - expected) < FLOAT32_LOGIT * max(1.0, abs(expected))
    assert lens.top_ids.shape == (tiny_lm.n_layers, 4, 3)
    assert lens.figure().data


def test_bad_position_is_refused(tiny_lm):
    with pytest.raises(LensError, match="outside"):
        head_lens(local_engine(tiny_lm), [3, 4, 5], 3)


def test_bundled_model_head_lens_has_layers_by_heads(bundled_lm):
    ids = list(encode_plain_text(bundled_lm.tokenizer, "The Eiffel Tower is in the city of").ids)
    lens = head_lens(local_engine(bundled_lm), ids, len(ids) - 1)
    assert lens.texts[lens.token_id] == " Paris"
    config = bundled_lm.model.config
    assert lens.logit.shape == (config.num_hidden_layers, config.num_attention_heads)
    assert np.isfinite(lens.logit).all()
