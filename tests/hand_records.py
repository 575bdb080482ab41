"""Records and a session built by hand for tests.

Generations of tricky texts and floats that obey the schema, and a session filled with one
of each thing a bundle carries.
"""

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
from perplex.workspace.annotations import add_annotation, edit_annotation
from perplex.workspace.sessions import create_session, get_session
from perplex.workspace.token_sets import add_token, create_token_set

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


TABLES = ("sessions", "generations", "token_steps", "annotations", "token_sets",
          "token_set_members")


def fill(store):
    """One session with branches, hostile text, annotations, token sets and settings."""
    made = create_session(store, "Study '../x' \"q\" <b>", settings={
        "mode": "prefill", "thresholds": [0.3, 0.7], "models": {"a": "bundled"}})
    root = make_generation(n_steps=60, n_alts=20, session_id=made.id, title="root")
    branch = make_generation(n_steps=45, n_alts=20, session_id=made.id, parent_id=root.id,
                             branch_position=30, title="branch")
    twig = make_generation(n_steps=40, n_alts=5, session_id=made.id, parent_id=branch.id,
                           branch_position=35, title="twig")
    for gen in (root, branch, twig):
        store.save_generation(gen)
    note = add_annotation(store, branch.id, 31, "<script>alert(1)</script>", end=36)
    edit_annotation(store, note.id, "'; DROP TABLE annotations; -- **x**")
    add_annotation(store, root.id, 12, "one token 😀")
    token_set = create_token_set(store, made.id, "R-Set")
    add_token(store, token_set.id, "tiny", 5, " Sorry", word="Sorry")
    add_token(store, token_set.id, "tiny", 6, "I", word="I")
    add_token(store, token_set.id, "tiny", 6, "I", word="I'm")
    create_token_set(store, made.id, "empty")
    return get_session(store, made.id)


def counts(store) -> dict[str, int]:
    """Rows in each table a bundle writes."""
    with store.cursor() as cur:
        return {t: cur.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}
