"""The records every view works on: one `TokenStep` per token, grouped in a `Generation`.

Probabilities are always those of the model's raw distribution at temperature 1 (see
DESIGN.md): softmax of the logits given everything before the token. Sampling settings
live in `DecodeParams` and never change these numbers. Entropy is in nats.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum


class TokenRole(str, Enum):
    """Where a token comes from in the sequence the model saw."""

    TEMPLATE = "template"  # chat-template scaffolding: role markers, special tokens
    PROMPT = "prompt"  # content of system and user messages, or a plain-text prompt
    RESPONSE = "response"  # content of assistant messages: generated, forced or scored


class Source(str, Enum):
    """How a generation's token records were obtained."""

    GENERATED = "generated"  # our decode loop
    SCORED = "scored"  # teacher-forced scoring of existing text
    IMPORTED = "imported"  # probabilities carried by an upload (e.g. API logprobs)


@dataclass(frozen=True)
class Alternative:
    """One candidate of the distribution at a position."""

    token_id: int | None
    text: str
    prob: float
    logprob: float


@dataclass(frozen=True)
class TokenStep:
    """One token of a sequence and the model's distribution that predicted it.

    `prob`, `logprob`, `entropy` and `rank` are None where nothing predicted the token
    (the first token of a sequence). `top` holds the k most probable tokens at this
    position, most probable first, whether or not the chosen token is among them.
    """

    position: int
    token_id: int | None
    text: str
    role: TokenRole
    message_index: int
    prob: float | None = None
    logprob: float | None = None
    entropy: float | None = None
    rank: int | None = None
    top: tuple[Alternative, ...] = ()
    entropy_is_estimate: bool = False  # True when computed from the top-k alone
    forced: bool = False  # True when the token was imposed (prefill, inject), not chosen

    @property
    def scored(self) -> bool:
        """Whether a distribution was recorded for this token."""
        return self.prob is not None


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str


@dataclass(frozen=True)
class DecodeParams:
    """How tokens were chosen. Recorded with a generation, never applied to its numbers."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    seed: int | None = None
    stop_strings: tuple[str, ...] = ()
    top_alternatives: int = 20

    @property
    def greedy(self) -> bool:
        """Whether decoding takes the argmax at every step."""
        return self.temperature <= 0.0


def new_id() -> str:
    """A fresh identifier for stored objects."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Generation:
    """A sequence of token records with the context that produced them.

    `messages` is the conversation the steps cover, the response included; `steps`
    covers every token the model saw (template, prompt and response).
    """

    steps: tuple[TokenStep, ...]
    messages: tuple[Message, ...]
    model_label: str
    source: Source
    params: DecodeParams | None = None
    stop_reason: str = ""
    model_spec: str = ""  # JSON of how the model was loaded (source, dtype, device)
    id: str = field(default_factory=new_id)
    session_id: str | None = None
    parent_id: str | None = None
    branch_position: int | None = None
    title: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def response_steps(self) -> tuple[TokenStep, ...]:
        """The response tokens, the ones the token view shows by default."""
        return tuple(s for s in self.steps if s.role is TokenRole.RESPONSE)

    @property
    def response_text(self) -> str:
        """The response as one string."""
        return "".join(s.text for s in self.response_steps)

    @property
    def last_user_text(self) -> str:
        """The last user message (what the answer replies to), or "" when there is none."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""

    def message_steps(self, message_index: int) -> tuple[TokenStep, ...]:
        """The content tokens (no template) of one message."""
        return tuple(s for s in self.steps
                     if s.message_index == message_index and s.role is not TokenRole.TEMPLATE)

    def view_indices(self) -> dict[int, int]:
        """Position → the token's index in its message's token view (its response tokens)."""
        index_of = {}
        for message_index in range(len(self.messages)):
            shown = [s for s in self.message_steps(message_index)
                     if s.role is TokenRole.RESPONSE]
            index_of.update({s.position: i for i, s in enumerate(shown)})
        return index_of

    def with_steps(self, steps: tuple[TokenStep, ...]) -> Generation:
        """A copy holding other steps (used while streaming)."""
        return replace(self, steps=steps)


def entropy_nats(probs: list[float]) -> float:
    """Shannon entropy in nats of a (possibly partial) list of probabilities."""
    return -sum(p * math.log(p) for p in probs if p > 0.0)
