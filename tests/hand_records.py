"""Records built by hand for tests: tricky texts and floats that obey the schema."""

from __future__ import annotations

import math

from perplex.core.records import (
    Alternative,
    DecodeParams,
    Generation,
    Message,
    Source,
    TokenRole,
    TokenStep,
)

TRICKY_TEXTS = [
    "Hello", " world", "😀", "👩‍👩‍👧", "\n", "\r\n", "\t", "<script>alert(1)</script>",
    "'; DROP TABLE x; --", '"quoted"', "back\\slash", "%s ? $1 :name", "", " ", "日本語",
    "e\u0301", "\ufffd", "\u200b",
]


def make_generation(n_steps: int = 40, n_alts: int = 20, **fields: object) -> Generation:
    """Build a generation by hand: tricky texts and floats, a first token with no distribution.

    Its numbers obey the schema (`core.validation`): p = exp(log p), ranks from 1, each
    top-k in order and summing to less than 1.
    """
    steps = []
    for i in range(n_steps):
        text = TRICKY_TEXTS[i % len(TRICKY_TEXTS)]
        top = tuple(
            Alternative(token_id=None if j == 3 else 1000 * i + j, text=TRICKY_TEXTS[j % 7] + "x",
                        prob=0.5 ** (j + 2) + i * 1e-12,
                        logprob=math.log(0.5 ** (j + 2) + i * 1e-12))
            for j in range(n_alts))
        if i == 0:
            steps.append(TokenStep(position=0, token_id=1, text=text, role=TokenRole.TEMPLATE,
                                   message_index=0, top=()))
            continue
        steps.append(TokenStep(
            position=i, token_id=None if i == 5 else 7 * i, text=text,
            role=TokenRole.PROMPT if i < 10 else TokenRole.RESPONSE, message_index=i // 10,
            prob=0.1 + 0.2 if i == 1 else 1.0 / (i + 1),
            logprob=math.log(0.1 + 0.2) if i == 1 else -math.log(i + 1) - 1e-17,
            entropy=5e-324 if i == 2 else math.pi / i, rank=i % 4 + 1, top=top,
            entropy_is_estimate=i % 3 == 0, forced=i % 5 == 0))
    defaults: dict[str, object] = dict(
        steps=tuple(steps),
        messages=(Message("system", "Be terse.\r\n"), Message("user", "'; DROP TABLE x; --"),
                  Message("assistant", "😀\t<b>")),
        model_label="tiny-test", source=Source.GENERATED,
        params=DecodeParams(max_new_tokens=64, temperature=0.7, top_p=0.9, top_k=40, seed=7,
                            stop_strings=("\n\n", "</s>"), top_alternatives=n_alts),
        stop_reason="eos", title="A 'title' with \"quotes\"",
        model_spec='{"dtype": "float32", "source": "tiny-test"}')
    defaults.update(fields)
    return Generation(**defaults)
