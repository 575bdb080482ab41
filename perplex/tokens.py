"""Turning messages into token ids with roles, and token ids back into exact text pieces."""

from __future__ import annotations

from dataclasses import dataclass

from perplex.errors import InputFormatError
from perplex.records import Message, TokenRole

PLAIN_TEXT_ROLE = "text"  # a message scored as plain text, without a chat template
CONTENT_ROLES = {"system": TokenRole.PROMPT, "user": TokenRole.PROMPT,
                 "assistant": TokenRole.RESPONSE, PLAIN_TEXT_ROLE: TokenRole.RESPONSE}


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
                    add_generation_prompt: bool) -> EncodedSequence:
    """Encode a conversation through the tokenizer's chat template, marking each token's role.

    A single message with role "text" is encoded as plain text (no template). Tokens the
    template adds (role markers, default system prompts) are TEMPLATE; tokens overlapping a
    message's content take that message's role.
    """
    messages = list(messages)
    if len(messages) == 1 and messages[0].role == PLAIN_TEXT_ROLE:
        return encode_plain_text(tokenizer, messages[0].content)
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
    return EncodedSequence(tuple(enc["input_ids"]), tuple(roles), tuple(indices))


def encode_plain_text(tokenizer, text: str) -> EncodedSequence:
    """Encode text without a template; a BOS token is prepended so every text token is scored."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    head = [bos] if bos is not None else []
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
