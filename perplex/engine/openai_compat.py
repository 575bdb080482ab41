"""An OpenAI-compatible endpoint as an engine: vLLM, llama.cpp's server, OpenRouter, OpenAI.

Generation goes through chat completions with `logprobs` and `top_logprobs` (at most 20),
streamed into the same `TokenStep` records the local engine makes. What an endpoint
returns is only the top of each distribution, so entropies are lower bounds (labelled
as such) and token ids are unknown; the residual stream and hooks do not exist here.
The API key is held in memory only: never stored, logged or shown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from urllib.parse import urlparse

from perplex.core.errors import GenerationError, InputFormatError
from perplex.core.formats import LogprobSteps
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole, TokenStep
from perplex.engine.protocol import Capabilities, CapabilityError, ModelInfo

MAX_TOP_K = 20  # what the OpenAI API (and vLLM's default --max-logprobs) allows
NO_INTERNALS = "an OpenAI-compatible endpoint exposes no residual stream: use a local model"
ENDPOINT_CAPABILITIES = Capabilities(
    full_distribution=False, scores_text=False, internals=False, hooks=False,
    max_top_k=MAX_TOP_K,
    why_not={"full_distribution": f"the endpoint returns at most the top {MAX_TOP_K} "
                                  "log-probabilities of each token",
             "scores_text": "this endpoint cannot score given text (chat completions only)",
             "internals": NO_INTERNALS, "hooks": NO_INTERNALS})


class EndpointEngine:
    """Chat completions with logprobs from an OpenAI-compatible server."""

    capabilities = ENDPOINT_CAPABILITIES

    def __init__(self, base_url: str, model: str, api_key: str = "", *,
                 timeout: float = 60.0, openrouter: bool | None = None) -> None:
        """Connect lazily; nothing is sent until the first request."""
        from openai import OpenAI

        if not urlparse(base_url).scheme.startswith("http"):
            raise InputFormatError(f"The base URL {base_url!r} is not an http(s) address: "
                                   "write e.g. http://127.0.0.1:8000/v1.")
        if not model.strip():
            raise InputFormatError("Name the model the endpoint serves.")
        self.base_url, self.model = base_url.rstrip("/"), model.strip()
        self.openrouter = "openrouter.ai" in base_url if openrouter is None else openrouter
        self._client = OpenAI(base_url=self.base_url, api_key=api_key or "none",
                              timeout=timeout, max_retries=0)

    def __repr__(self) -> str:
        """No key in any representation."""
        return f"EndpointEngine({self.base_url!r}, {self.model!r})"

    @property
    def info(self) -> ModelInfo:
        """What is known without internals: the label; sizes are the server's secret."""
        host = urlparse(self.base_url).netloc
        return ModelInfo(f"{self.model} @ {host}", vocab_size=0, context_length=0,
                         n_layers=None, eos_ids=frozenset())

    def encode(self, messages, add_generation_prompt, text_prefix=None):
        """The server applies its own template and tokenizer: not visible from here."""
        raise CapabilityError(f"{self.info.label} tokenises on the server; its token ids "
                              "and template are not visible through the API.")

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids mean nothing outside the server."""
        raise CapabilityError(f"{self.info.label} gives no token ids to decode.")

    def score(self, conversations, top_k: int = 20, text_prefix=None) -> list[Generation]:
        """Refused: chat endpoints return log-probabilities of what they generate only."""
        self.capabilities.require("scores_text", self.info.label)
        return []

    def next_token_probs(self, contexts):
        """Refused: only the top-k is returned."""
        self.capabilities.require("full_distribution", self.info.label)

    def residuals(self, ids, layers):
        """Refused: no internals."""
        self.capabilities.require("internals", self.info.label)

    def unembed(self, hidden):
        """Refused: no internals."""
        self.capabilities.require("internals", self.info.label)

    def generate(self, messages: Sequence[Message], params: DecodeParams, prefill: str = "",
                 text_prefix=None) -> EndpointRun:
        """A streamed chat completion with logprobs; iterate it for its TokenSteps."""
        if prefill:
            raise CapabilityError(f"{self.info.label}: a chat endpoint cannot start the "
                                  "answer with given text (prefill needs a local model).")
        if [m.role for m in messages] == ["text"]:
            raise CapabilityError(f"{self.info.label} takes chat messages, not plain text.")
        return EndpointRun(self, tuple(messages), params)

    def _request(self, messages: tuple[Message, ...], params: DecodeParams) -> dict:
        request = dict(model=self.model, stream=True, logprobs=True,
                       top_logprobs=min(params.top_alternatives, MAX_TOP_K),
                       max_tokens=params.max_new_tokens,
                       messages=[{"role": m.role, "content": m.content} for m in messages],
                       temperature=params.temperature, top_p=params.top_p)
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop_strings:
            request["stop"] = list(params.stop_strings)
        if self.openrouter:  # route only to providers that return logprobs
            request["extra_body"] = {"provider": {"require_parameters": True}}
        return request


class EndpointRun:
    """A chat completion in progress: its steps as they stream, then the generation."""

    def __init__(self, engine: EndpointEngine, messages: tuple[Message, ...],
                 params: DecodeParams) -> None:
        """Prepare; the request is sent when iteration starts."""
        self.engine, self.messages, self.params = engine, messages, params
        self.stop_reason = ""
        self._steps = LogprobSteps("the endpoint's answer", message_index=len(messages))
        self._text: list[str] = []

    def __iter__(self) -> Iterator[TokenStep]:
        """Send the request and yield each answer token with its top-k as it arrives."""
        import openai

        label = self.engine.info.label
        try:
            stream = self.engine._client.chat.completions.create(
                **self.engine._request(self.messages, self.params))
            for chunk in stream:
                yield from self._chunk_steps(chunk)
        except openai.AuthenticationError:
            raise GenerationError(f"{label} refused the API key (401): check the key.") \
                from None
        except openai.NotFoundError:
            raise GenerationError(f"{label} does not serve the model {self.engine.model!r} "
                                  "(404): check the model name the server lists.") from None
        except openai.APITimeoutError:
            n = len(self._steps.steps)
            raise GenerationError(f"{label} stopped answering (timed out after {n} "
                                  f"token{'s' * (n != 1)}). Nothing was saved; try again or "
                                  "raise the timeout.") from None
        except openai.APIConnectionError:
            raise GenerationError(f"{label} cannot be reached: is the server running at "
                                  f"{self.engine.base_url}?") from None
        except openai.APIStatusError as exc:
            raise GenerationError(f"{label} answered {exc.status_code}: "
                                  f"{str(exc.message)[:300]}") from None
        except InputFormatError as exc:
            raise GenerationError(f"{label} sent log-probabilities Perplex cannot read: "
                                  f"{exc}") from None

    def _chunk_steps(self, chunk) -> Iterator[TokenStep]:
        for choice in chunk.choices or ():
            if choice.finish_reason:
                self.stop_reason = {"stop": "eos", "length": "max_new_tokens"}.get(
                    choice.finish_reason, choice.finish_reason)
            text = choice.delta.content if choice.delta else None
            entries = (choice.logprobs.content or []) if choice.logprobs else []
            if text and not entries:
                raise GenerationError(
                    f"{self.engine.info.label} ignores `logprobs`: it sent text without "
                    "log-probabilities, so there is nothing to show. Use a server that "
                    "returns them (vLLM, llama.cpp's server; on OpenRouter a provider that "
                    "supports them).")
            if text:
                self._text.append(text)
            for entry in entries:
                yield self._steps.add(entry.model_dump())

    def run(self) -> Generation:
        """Stream to the end and return the generation."""
        for _ in self:
            pass
        return self.generation()

    def generation(self) -> Generation:
        """The generated answer as a Generation (IMPORTED: its numbers came from the API)."""
        steps = self._steps.finish()
        content = "".join(self._text) or "".join(s.text for s in steps)
        return Generation(steps=steps, messages=self.messages + (Message("assistant", content),),
                          model_label=self.engine.info.label, source=Source.IMPORTED,
                          params=self.params, stop_reason=self.stop_reason,
                          model_spec=json.dumps({"endpoint": self.engine.base_url,
                                                 "model": self.engine.model}))


def top_k_agreement(ours: Sequence[TokenStep], theirs: Sequence[TokenStep]) -> tuple[float, float]:
    """(share of positions where the two top-1s agree, median |Δ log p| of chosen tokens)."""
    pairs = [(a, b) for a, b in zip(ours, theirs)
             if a.role is TokenRole.RESPONSE and a.top and b.top]
    if not pairs:
        return math.nan, math.nan
    agree = sum(a.top[0].text == b.top[0].text for a, b in pairs) / len(pairs)
    deltas = sorted(abs(a.logprob - b.logprob) for a, b in pairs
                    if a.text == b.text and a.logprob is not None and b.logprob is not None)
    return agree, deltas[len(deltas) // 2] if deltas else math.nan
