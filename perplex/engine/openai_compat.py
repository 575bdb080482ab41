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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import urlparse

from perplex.core.errors import GenerationError, InputFormatError
from perplex.core.formats import LogprobSteps
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole, TokenStep
from perplex.core.tokens import PLAIN_TEXT_ROLE
from perplex.engine.probe import EndpointProbe, probed_capabilities
from perplex.engine.protocol import Capabilities, CapabilityError, ModelInfo

MAX_TOP_K = 20  # what the OpenAI API (and vLLM's default --max-logprobs) allows
NO_INTERNALS = "an OpenAI-compatible endpoint exposes no residual stream: use a local model"
ENDPOINT_CAPABILITIES = Capabilities(
    token_ids=False, full_distribution=False, scores_text=True, internals=False, hooks=False,
    stepwise=False, max_top_k=MAX_TOP_K,
    why_not={"token_ids": "the server tokenises and applies its chat template out of sight; "
                          "its token ids are not returned",
             "full_distribution": f"the endpoint returns at most the top {MAX_TOP_K} "
                                  "log-probabilities of each token",
             "internals": NO_INTERNALS, "hooks": NO_INTERNALS,
             "stepwise": "decoding methods need the model's logits step by step; the API "
                         "returns sampled text: use a local model"})


class EndpointEngine:
    """Chat completions with logprobs from an OpenAI-compatible server."""

    capabilities = ENDPOINT_CAPABILITIES

    def __init__(self, base_url: str, model: str, api_key: str = "", *,
                 timeout: float = 60.0, openrouter: bool | None = None,
                 probe: EndpointProbe | None = None) -> None:
        """Connect lazily; nothing is sent until the first request.

        With `probe` (`engine.probe`), the capabilities are what the server was found to give.
        """
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
        self._echo_checked = False  # whether echoed log-probabilities were checked
        if probe is not None:
            self.capabilities = probed_capabilities(ENDPOINT_CAPABILITIES, probe)
            self._echo_checked = probe.prompt_logprobs == "yes"

    def __repr__(self) -> str:
        """No key in any representation."""
        return f"EndpointEngine({self.base_url!r}, {self.model!r})"

    @property
    def info(self) -> ModelInfo:
        """What is known without internals: the label; sizes are the server's secret."""
        host = urlparse(self.base_url).netloc
        return ModelInfo(f"{self.model} @ {host}", vocab_size=0, context_length=0,
                         n_layers=None, eos_ids=frozenset(), spec=self._spec())

    def encode(self, messages, add_generation_prompt, text_prefix=None):
        """The server applies its own template and tokenizer: not visible from here."""
        self.capabilities.require("token_ids", self.info.label)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids mean nothing outside the server."""
        self.capabilities.require("token_ids", self.info.label)

    def score(self, conversations, top_k: int = 20, text_prefix=None) -> list[Generation]:
        """Plain texts scored by the server: completions with `echo` and `logprobs`.

        The server reads each text as it would a prompt (with whatever it puts first;
        every token it read comes back, so the records show it). Chat conversations are
        refused: the server's template is out of sight, so their tokens cannot be placed.
        A server that will not echo log-probabilities turns `scores_text` off, with the
        reason, and raises `CapabilityError`.
        """
        self.capabilities.require("scores_text", self.info.label)
        texts = []
        for conversation in conversations:
            if [m.role for m in conversation] != [PLAIN_TEXT_ROLE]:
                raise CapabilityError(
                    f"{self.info.label} scores plain text only: the server applies its chat "
                    "template out of sight, so a conversation's tokens cannot be placed. "
                    "Score it as plain text, or with a local model.")
            texts.append(conversation[0].content)
        return [self._score_text(text, self.top_k(top_k)) for text in texts]

    def _score_text(self, text: str, top_k: int) -> Generation:
        import openai

        if not text:
            raise InputFormatError("There is no text to score.")
        try:
            with api_errors(self, "scoring"):
                answer = self._client.completions.create(
                    model=self.model, prompt=text, max_tokens=1, echo=True,
                    logprobs=top_k, temperature=0.0)
        except GenerationError as exc:
            if not isinstance(exc.__cause__, (openai.BadRequestError, openai.NotFoundError,
                                                openai.UnprocessableEntityError)):
                raise
            self._cannot_score(f"it refused completions with echo and logprobs ({exc})")
        logprobs = answer.choices[0].logprobs if answer.choices else None
        if not logprobs or not logprobs.tokens or not logprobs.text_offset:
            self._cannot_score("it returned no log-probabilities of the echoed text")
        steps = echoed_steps(text, logprobs.model_dump(), f"{self.info.label}'s scoring")
        if not self._echo_checked:
            self._check_echo(text, logprobs.model_dump(), top_k)
        return Generation(steps=steps, messages=(Message(PLAIN_TEXT_ROLE, text),),
                          model_label=self.info.label, source=Source.IMPORTED,
                          model_spec=self._spec())

    def _check_echo(self, text: str, echoed: dict, top_k: int) -> None:
        """Once per engine: check the echo of a text's last token against the server.

        The server's own prediction of that token is a completion of the text before it.
        Some servers echo each token with the prediction after it; their numbers would
        all be wrong.
        """
        offsets, tops = echoed["text_offset"], echoed.get("top_logprobs") or []
        last = max(i for i, start in enumerate(offsets) if start < len(text))
        if last == 0:
            return  # one token: nothing predicted it, nothing to check yet
        with api_errors(self, "scoring"):
            answer = self._client.completions.create(
                model=self.model, prompt=text[:offsets[last]], max_tokens=1, logprobs=top_k,
                temperature=0.0)
        predicted = answer.choices[0].logprobs.top_logprobs[0] if answer.choices and \
            answer.choices[0].logprobs and answer.choices[0].logprobs.top_logprobs else None
        if not echo_agrees(tops[last] or {}, predicted or {}):
            self._cannot_score(
                "its echoed log-probabilities are not its own predictions of the echoed "
                "tokens (llama-cpp-python's server gives each token the prediction after "
                "it: shifted by one token), so they would be wrong. vLLM's server echoes "
                "them correctly")
        self._echo_checked = True

    def _cannot_score(self, reason: str) -> None:
        """Turn `scores_text` off with `reason` (pages read it) and refuse this call."""
        self.capabilities = replace(
            self.capabilities, scores_text=False,
            why_not={**self.capabilities.why_not,
                     "scores_text": f"this endpoint cannot score given text: {reason}"})
        self.capabilities.require("scores_text", self.info.label)

    def _spec(self) -> str:
        return json.dumps({"endpoint": self.base_url, "model": self.model})

    def next_token_probs(self, contexts):
        """Refused: only the top-k is returned."""
        self.capabilities.require("full_distribution", self.info.label)

    def tokenizer_facts(self):
        """Refused: the server's tokenizer is out of sight."""
        self.capabilities.require("token_ids", self.info.label)

    def score_sequence(self, seq, top_k: int = 20):
        """Refused: the server takes text, not token ids."""
        self.capabilities.require("token_ids", self.info.label)

    def sequence_logits(self, ids):
        """Refused: the API gives only its top-k."""
        self.capabilities.require("full_distribution", self.info.label)

    def residuals(self, ids, layers):
        """Refused: no internals."""
        self.capabilities.require("internals", self.info.label)

    def unembed(self, hidden):
        """Refused: no internals."""
        self.capabilities.require("internals", self.info.label)

    def patched_logits(self, ids, patches):
        """Refused: no hooks."""
        self.capabilities.require("hooks", self.info.label)

    def logit_stream(self, exit_layer=None):
        """Refused: no step-by-step logits."""
        self.capabilities.require("stepwise", self.info.label)

    def generate(self, messages: Sequence[Message], params: DecodeParams, prefill: str = "",
                 text_prefix=None) -> EndpointRun:
        """A streamed chat completion with logprobs; iterate it for its TokenSteps."""
        if prefill:
            raise CapabilityError(f"{self.info.label}: a chat endpoint cannot start the "
                                  "answer with given text (prefill needs a local model).")
        return EndpointRun(self, tuple(messages), params)

    def top_k(self, wanted: int) -> int:
        """The alternatives to ask for: `wanted`, within what the server returns."""
        cap = self.capabilities.max_top_k
        if cap == 0:
            raise CapabilityError(f"{self.info.label} returns no log-probabilities (probed): "
                                  "Perplex has nothing to show. Serve the model with them "
                                  "(vLLM: --max-logprobs; llama-cpp-python: --logits_all).")
        return min(wanted, MAX_TOP_K if cap is None else cap)

    def _request(self, messages: tuple[Message, ...], params: DecodeParams) -> dict:
        k = self.top_k(params.top_alternatives)
        request = dict(model=self.model, stream=True, max_tokens=params.max_new_tokens,
                       temperature=params.temperature, top_p=params.top_p)
        if is_plain(messages):  # a continuation of the text: completions, top-k as `logprobs`
            request.update(prompt=messages[0].content, logprobs=k)
        else:
            request.update(messages=[{"role": m.role, "content": m.content} for m in messages],
                           logprobs=True, top_logprobs=k)
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop_strings:
            request["stop"] = list(params.stop_strings)
        if self.openrouter:  # route only to providers that return logprobs
            request["extra_body"] = {"provider": {"require_parameters": True}}
        return request


def is_plain(messages: Sequence[Message]) -> bool:
    """Whether `messages` is one plain text (continued through completions, not chat)."""
    return [m.role for m in messages] == [PLAIN_TEXT_ROLE]


@contextmanager
def api_errors(engine: EndpointEngine, doing: str, done: Callable[[], int] = lambda: 0):
    """Turn the openai client's failures into `GenerationError`s that say what to do."""
    import openai

    label = engine.info.label
    try:
        yield
    except openai.AuthenticationError:
        raise GenerationError(f"{label} refused the API key (401): check the key.") from None
    except openai.NotFoundError as exc:
        raise GenerationError(f"{label} does not serve the model {engine.model!r} for "
                              f"{doing} (404: {str(exc.message)[:200]}): check the model name "
                              "the server lists.") from exc
    except openai.APITimeoutError:
        n = done()
        raise GenerationError(f"{label} stopped answering (timed out after {n} "
                              f"token{'s' * (n != 1)}). Nothing was saved; try again or "
                              "raise the timeout.") from None
    except openai.APIConnectionError:
        raise GenerationError(f"{label} cannot be reached: is the server running at "
                              f"{engine.base_url}?") from None
    except openai.APIStatusError as exc:
        raise GenerationError(f"{label} answered {exc.status_code} to {doing}: "
                              f"{str(exc.message)[:300]}") from exc
    except InputFormatError as exc:
        raise GenerationError(f"{label} sent log-probabilities Perplex cannot read: "
                              f"{exc}") from None


def completion_entries(logprobs: dict) -> list[dict]:
    """OpenAI-style entries from a completions `logprobs` object (parallel lists)."""
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    if not (len(tokens) == len(values) and len(tops) in (0, len(tokens))):
        raise InputFormatError("the completions logprobs lists differ in length")
    return [{"token": token, "logprob": value,
             "top_logprobs": [{"token": t, "logprob": v}
                              for t, v in ((tops[i] or {}) if tops else {}).items()]}
            for i, (token, value) in enumerate(zip(tokens, values))]


def echo_agrees(echoed: dict, predicted: dict, tolerance: float = 0.1) -> bool:
    """Whether an echoed token's top log-probabilities are the server's own prediction of it.

    `predicted` is what the server gives as the next-token top-k after the text before the
    token. A correct echo matches it (the same top tokens, log-probabilities within
    `tolerance`); a shifted one (the prediction after the token) does not.
    """
    if not echoed or not predicted or set(echoed) != set(predicted):
        return False
    return max(abs(echoed[t] - predicted[t]) for t in echoed) <= tolerance


def echoed_steps(text: str, logprobs: dict, where: str) -> tuple[TokenStep, ...]:
    """The records of `text` echoed back with logprobs; token texts cut at the offsets.

    The first token has no log-probability (nothing predicted it) and is unscored; tokens
    past the end of `text` (the one generated token) are dropped.
    """
    offsets = list(logprobs.get("text_offset") or [])
    entries = completion_entries(logprobs)
    if len(offsets) != len(entries):
        raise InputFormatError(f"{where}: text_offset and tokens differ in length")
    kept = [i for i, start in enumerate(offsets) if start < len(text)]
    bounds = [offsets[i] for i in kept] + [len(text)]
    checked = LogprobSteps(where)
    steps = []
    for n, i in enumerate(kept):
        piece = text[bounds[n]:bounds[n + 1]]
        if entries[i]["logprob"] is None:  # nothing predicted it
            steps.append(TokenStep(position=n, token_id=None, text=piece,
                                   role=TokenRole.RESPONSE, message_index=0))
            continue
        if not entries[i]["top_logprobs"]:
            raise InputFormatError(f"{where}, token {n}: no top log-probabilities")
        steps.append(replace(checked.add(entries[i]), position=n, text=piece))
    return tuple(steps)


class EndpointRun:
    """A completion in progress (chat, or plain text continued): its steps, then the record."""

    def __init__(self, engine: EndpointEngine, messages: tuple[Message, ...],
                 params: DecodeParams) -> None:
        """Prepare; the request is sent when iteration starts."""
        self.engine, self.messages, self.params = engine, messages, params
        self.plain = is_plain(messages)
        self.stop_reason = ""
        self._steps = LogprobSteps("the endpoint's answer",
                                   message_index=0 if self.plain else len(messages))
        self._text: list[str] = []

    def __iter__(self) -> Iterator[TokenStep]:
        """Send the request and yield each answer token with its top-k as it arrives."""
        client = self.engine._client
        create = client.completions.create if self.plain else client.chat.completions.create
        with api_errors(self.engine, "this request", lambda: len(self._steps.steps)):
            for chunk in create(**self.engine._request(self.messages, self.params)):
                yield from self._chunk_steps(chunk)

    def _chunk_steps(self, chunk) -> Iterator[TokenStep]:
        for choice in chunk.choices or ():
            if choice.finish_reason:
                self.stop_reason = {"stop": "eos", "length": "max_new_tokens"}.get(
                    choice.finish_reason, choice.finish_reason)
            if self.plain:
                text = choice.text
                entries = completion_entries(choice.logprobs.model_dump()) \
                    if choice.logprobs else []
            else:
                text = choice.delta.content if choice.delta else None
                entries = [e.model_dump() for e in (choice.logprobs.content or [])] \
                    if choice.logprobs else []
            if text and not entries:
                raise GenerationError(
                    f"{self.engine.info.label} ignores `logprobs`: it sent text without "
                    "log-probabilities, so there is nothing to show. Use a server that "
                    "returns them (vLLM, llama.cpp's server; on OpenRouter a provider that "
                    "supports them).")
            if text:
                self._text.append(text)
            for entry in entries:
                yield self._steps.add(entry)

    def run(self) -> Generation:
        """Stream to the end and return the generation."""
        for _ in self:
            pass
        return self.generation()

    def generation(self) -> Generation:
        """The answer as a Generation (IMPORTED: its numbers came from the API).

        A plain text stays one message, the prompt and its continuation, as locally; its
        records are the continuation's (the prompt's were not asked for).
        """
        steps = self._steps.finish()
        content = "".join(self._text) or "".join(s.text for s in steps)
        if self.plain:
            messages = (Message(PLAIN_TEXT_ROLE, self.messages[0].content + content),)
        else:
            messages = self.messages + (Message("assistant", content),)
        return Generation(steps=steps, messages=messages, model_label=self.engine.info.label,
                          source=Source.IMPORTED, params=self.params,
                          stop_reason=self.stop_reason, model_spec=self.engine._spec())


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
