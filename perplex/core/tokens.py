"""Turning messages into token ids with roles, and token ids back into exact text pieces."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from perplex.core.errors import InputFormatError
from perplex.core.records import Message, TokenRole

PLAIN_TEXT_ROLE = "text"  # a message scored as plain text, without a chat template
CONTENT_ROLES = {"system": TokenRole.PROMPT, "user": TokenRole.PROMPT,
                 "assistant": TokenRole.RESPONSE, PLAIN_TEXT_ROLE: TokenRole.RESPONSE}


class TextPrefix(str, Enum):
    """The token put before plain text, so that its first token is predicted too."""

    NONE = "none"  # nothing: the text's first token is not scored
    BOS = "bos"  # the tokenizer's beginning-of-sequence token
    END_OF_TEXT = "end-of-text"  # the document separator the model was pretrained with


# Document separators by name, most common first; a tokenizer's own EOS is tried last.
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
PREFIX_LABELS = {TextPrefix.NONE: "nothing (first token unscored)",
                 TextPrefix.BOS: "BOS", TextPrefix.END_OF_TEXT: "end-of-text"}


def prefix_ids(tokenizer, prefix: TextPrefix) -> tuple[int, ...]:
    """The ids `prefix` stands for with this tokenizer; InputFormatError if it has none."""
    if prefix is TextPrefix.NONE:
        return ()
    found = (tokenizer.bos_token_id if prefix is TextPrefix.BOS
             else _end_of_text_id(tokenizer))
    if found is None:
        raise InputFormatError(f"This tokenizer has no {PREFIX_LABELS[prefix]} token: choose "
                               "another start for plain text.")
    return (int(found),)


def available_prefixes(tokenizer) -> list[TextPrefix]:
    """The prefixes this tokenizer has, in the order they are offered."""
    return [p for p in (TextPrefix.END_OF_TEXT, TextPrefix.BOS, TextPrefix.NONE)
            if p is TextPrefix.NONE or (tokenizer.bos_token_id if p is TextPrefix.BOS
                                        else _end_of_text_id(tokenizer)) is not None]


def default_text_prefix(tokenizer) -> TextPrefix:
    """End-of-text where the tokenizer has one, else BOS, else none.

    Pretraining separated documents with end-of-text; a chat model's BOS is often its
    chat-turn marker (SmolLM2: <|im_start|>), which conditions text as a chat turn.
    """
    return available_prefixes(tokenizer)[0]


def _end_of_text_id(tokenizer) -> int | None:
    vocab = tokenizer.get_vocab()
    for name in END_OF_TEXT_TOKENS:
        if name in vocab:
            return int(vocab[name])
    return None


@dataclass(frozen=True)
class EncodedSequence:
    """Token ids with, for each, its role and the index of the message it belongs to."""

    ids: tuple[int, ...]
    roles: tuple[TokenRole, ...]
    message_indices: tuple[int, ...]

    def __post_init__(self) -> None:
        """Check that the three sequences line up."""
        if not len(self.ids) == len(self.roles) == len(self.message_indices):
            raise ValueError("ids, roles and message_indices must have one entry per token")

    def __len__(self) -> int:
        """Number of tokens."""
        return len(self.ids)

    def extended(self, ids: list[int], role: TokenRole, message_index: int) -> EncodedSequence:
        """This sequence followed by `ids`, all with one role."""
        return EncodedSequence(self.ids + tuple(ids), self.roles + (role,) * len(ids),
                               self.message_indices + (message_index,) * len(ids))


def encode_messages(tokenizer, messages: tuple[Message, ...] | list[Message],
                    add_generation_prompt: bool,
                    text_prefix: TextPrefix | None = None) -> EncodedSequence:
    """Encode a conversation through the tokenizer's chat template, marking each token's role.

    A single message with role "text" is encoded as plain text (no template), after
    `text_prefix` (None: the tokenizer's default). Tokens the
    template adds (role markers, default system prompts) are TEMPLATE; tokens overlapping a
    message's content take that message's role.
    """
    messages = list(messages)
    if len(messages) == 1 and messages[0].role == PLAIN_TEXT_ROLE:
        return encode_plain_text(tokenizer, messages[0].content, text_prefix)
    for m in messages:
        if m.role not in CONTENT_ROLES or m.role == PLAIN_TEXT_ROLE:
            raise InputFormatError(
                f"Unknown message role {m.role!r}: use system, user or assistant.")
    if not getattr(tokenizer, "chat_template", None):
        raise InputFormatError(
            "This model's tokenizer has no chat template, so it cannot take chat messages. "
            "Score the text as plain text instead, or load an instruction-tuned model.")
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        tokenize=False, add_generation_prompt=add_generation_prompt)
    spans = _content_spans(rendered, messages)
    enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    roles, indices = [], []
    current = 0  # the first message whose content has not ended before this token
    for start, end in enc["offset_mapping"]:
        while current < len(spans) - 1 and start >= spans[current][1]:
            current += 1
        s, e = spans[current]
        overlaps = s < e and start < e and end > s
        roles.append(CONTENT_ROLES[messages[current].role] if overlaps else TokenRole.TEMPLATE)
        indices.append(current)
    _answer_end_of_turn(tokenizer, enc["input_ids"], roles, indices, messages)
    return EncodedSequence(tuple(enc["input_ids"]), tuple(roles), tuple(indices))


def end_of_turn_ids(tokenizer) -> frozenset[int]:
    """The tokenizer's end-of-sequence id(s): the token a chat template closes a turn with."""
    eos = getattr(tokenizer, "eos_token_id", None)
    return frozenset([eos] if isinstance(eos, int) else (eos or ()))


def _answer_end_of_turn(tokenizer, ids, roles: list[TokenRole], indices: list[int],
                        messages: list[Message]) -> None:
    """Give each assistant message the end-of-turn token that closes it, as an answer token.

    Generation records the end-of-turn token it chose as part of the answer (its probability
    is P(stop)); a transcript with the same ids must count it the same way, so the first
    token after an assistant message's content, when it is an end-of-turn id, is that
    message's RESPONSE token too (not TEMPLATE).
    """
    ends = end_of_turn_ids(tokenizer)
    for i in range(1, len(ids)):
        before, owner = roles[i - 1], indices[i - 1]
        if (before is TokenRole.RESPONSE and roles[i] is TokenRole.TEMPLATE
                and ids[i] in ends and messages[owner].role == "assistant"):
            roles[i], indices[i] = TokenRole.RESPONSE, owner


def default_system_prompt(tokenizer) -> str | None:
    """The system prompt the chat template adds when a conversation has none, or None.

    Found by rendering a user turn alone and after a marker system message: what the
    template puts where the marker stood is its default (SmolLM2: "You are a helpful AI
    assistant named SmolLM, trained by Hugging Face").
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker, user = "\u2063perplex-system\u2063", [{"role": "user", "content": "Hi"}]
    try:
        alone = tokenizer.apply_chat_template(user, tokenize=False)
        marked = tokenizer.apply_chat_template([{"role": "system", "content": marker}] + user,
                                               tokenize=False)
    except Exception:  # noqa: BLE001 - a template may refuse system messages outright
        return None
    if marker not in marked:
        return None
    before, after = marked.split(marker, 1)
    if not (alone.startswith(before) and alone.endswith(after)
            and len(alone) >= len(before) + len(after)):
        return None
    return alone[len(before):len(alone) - len(after)]


def encode_plain_text(tokenizer, text: str,
                      prefix: TextPrefix | None = None) -> EncodedSequence:
    """Encode text without a template, after `prefix` (None: `default_text_prefix`).

    The prefix token is marked TEMPLATE; with a prefix, every text token is scored.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    head = list(prefix_ids(tokenizer, prefix or default_text_prefix(tokenizer)))
    return EncodedSequence(tuple(head + ids), (TokenRole.TEMPLATE,) * len(head)
                           + (TokenRole.RESPONSE,) * len(ids), (0,) * (len(head) + len(ids)))


def _content_spans(rendered: str, messages: list[Message]) -> list[tuple[int, int]]:
    """Character spans of each message's content in the rendered template, in order."""
    spans, cursor = [], 0
    for m in messages:
        start = rendered.find(m.content, cursor) if m.content else -1
        if start < 0:
            spans.append((cursor, cursor))
            continue
        spans.append((start, start + len(m.content)))
        cursor = start + len(m.content)
    return spans


class Detokenizer:
    """Gives each token the text it adds, so that the pieces join into the decoded string.

    A character split over several tokens (byte-level BPE: emoji, CJK) is given to the token
    that completes it; the tokens before it get "". Special tokens keep their text.
    """

    def __init__(self, tokenizer) -> None:
        """Start with no tokens."""
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window whose text has been emitted up to _read
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token and return the text it completes."""
        self._ids.append(token_id)
        done = self._decode(self._ids[self._prefix:self._read])
        now = self._decode(self._ids[self._prefix:])
        if len(now) > len(done) and not now.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(done):]
        return ""

    def pending(self) -> str:
        """Text of trailing tokens that never completed a character (shown as decoded)."""
        if self._read == len(self._ids):
            return ""
        done = self._decode(self._ids[self._prefix:self._read])
        return self._decode(self._ids[self._prefix:])[len(done):]


def token_texts(tokenizer, ids: list[int] | tuple[int, ...]) -> list[str]:
    """The text each token adds, for a whole sequence at once."""
    detok = Detokenizer(tokenizer)
    texts = [detok.push(i) for i in ids]
    if texts and (rest := detok.pending()):
        texts[-1] += rest
    return texts


SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")


@dataclass(frozen=True)
class TokenizerFacts:
    """What makes two tokenizers the same: vocabulary, special tokens, chat template."""

    vocab: dict[str, int]  # token string → id
    special: dict[str, str | None]  # bos/eos/pad/unk → their token strings
    chat_template: str | None
    vocab_size: int  # rows of the model's unembedding (may exceed the vocabulary)


def tokenizer_facts(tokenizer, vocab_size: int) -> TokenizerFacts:
    """The facts of a Hugging Face tokenizer for a model with `vocab_size` output rows."""
    special = {name: getattr(tokenizer, name, None) for name in SPECIAL_TOKEN_NAMES}
    return TokenizerFacts(dict(tokenizer.get_vocab()),
                          {k: None if v is None else str(v) for k, v in special.items()},
                          getattr(tokenizer, "chat_template", None), int(vocab_size))
