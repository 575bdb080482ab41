"""Token texts join into the exact decoded string; roles follow the chat template."""

from __future__ import annotations

from perplex.records import Message, TokenRole
from perplex.tokens import encode_messages, token_texts


def test_texts_join_exactly_even_when_a_character_spans_tokens(tiny_lm):
    text = "émoji 🙂 and ✓\n\ttabs <img src=x onerror=alert(1)>"
    ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    texts = token_texts(tiny_lm.tokenizer, ids)
    assert len(texts) == len(ids)
    assert "".join(texts) == text
    assert "" in texts  # the emoji's first bytes complete nothing on their own
    assert "🙂" in texts[texts.index("") + 1] or any("🙂" in t for t in texts)


def test_generation_prompt_is_template_and_content_keeps_its_role(tiny_lm):
    seq = encode_messages(tiny_lm.tokenizer, (Message("user", "Hello world!"),),
                          add_generation_prompt=True)
    texts = token_texts(tiny_lm.tokenizer, seq.ids)
    user = "".join(t for t, r in zip(texts, seq.roles) if r is TokenRole.PROMPT)
    assert user == "Hello world!"
    assert "".join(texts).endswith("<|im_start|>assistant\n")
    assert seq.roles[-1] is TokenRole.TEMPLATE
