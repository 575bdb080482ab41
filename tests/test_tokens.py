"""Token texts join into the exact decoded string; roles follow the chat template."""

from __future__ import annotations

from perplex.core.records import Message, TokenRole
from perplex.core.tokens import encode_messages, token_texts


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


def test_plain_text_prefix_is_a_choice_shown_as_the_first_token(bundled_lm):
    """SmolLM2's BOS is its chat-turn marker; end-of-text is the default start of text."""
    from perplex.core.tokens import (
        TextPrefix,
        available_prefixes,
        default_text_prefix,
        encode_plain_text,
    )

    tok = bundled_lm.tokenizer
    assert tok.bos_token == "<|im_start|>" and default_text_prefix(tok) is TextPrefix.END_OF_TEXT
    assert available_prefixes(tok) == [TextPrefix.END_OF_TEXT, TextPrefix.BOS, TextPrefix.NONE]
    body = tok("The Colosseum is in the city of", add_special_tokens=False)["input_ids"]
    for prefix, head in ((TextPrefix.END_OF_TEXT, ["<|endoftext|>"]),
                         (TextPrefix.BOS, ["<|im_start|>"]), (TextPrefix.NONE, [])):
        seq = encode_plain_text(tok, "The Colosseum is in the city of", prefix)
        assert list(seq.ids) == tok.convert_tokens_to_ids(head) + body
        assert seq.roles[:len(head)] == (TokenRole.TEMPLATE,) * len(head)
    assert encode_plain_text(tok, "x").ids[0] == tok.convert_tokens_to_ids("<|endoftext|>")


def test_the_templates_default_system_prompt_is_found_and_written_out(bundled_lm, tiny_lm):
    from perplex.core.tokens import default_system_prompt

    tok = bundled_lm.tokenizer
    default = default_system_prompt(tok)
    assert default == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    user = (Message("user", "Hi"),)
    implicit = encode_messages(tok, user, True)
    explicit = encode_messages(tok, (Message("system", default),) + user, True)
    assert implicit.ids == explicit.ids  # writing the default out changes no token
    assert explicit.roles.count(TokenRole.PROMPT) > implicit.roles.count(TokenRole.PROMPT)
    none = encode_messages(tok, (Message("system", ""),) + user, True)
    assert "SmolLM" not in tok.decode(none.ids) and len(none) < len(implicit)
    assert default_system_prompt(tiny_lm.tokenizer) is None  # its template adds none
