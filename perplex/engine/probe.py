"""What an OpenAI-compatible endpoint exposes, found out by asking it.

Servers differ: some serve chat only, cap the top-k, return no log-probabilities of the
prompt (or return them shifted by a token), return log-probabilities after temperature
or top-p instead of the model's raw distribution, or answer differently to the same
request at temperature 0. Each check below is one or two small requests; what a check
finds is kept with the endpoint (the session's settings) and turns the engine's
capabilities down to what it really gives, each with the reason pages show.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from perplex.core.errors import PerplexError
from perplex.engine.protocol import Capabilities

PROBE_TEXT = "The capital of France is"
PROBE_CHAT = [{"role": "user", "content": "What is the capital of France?"}]
TOP_KS = (20, 10, 5, 1)  # the largest first; 20 is the OpenAI API's own cap
TEMPERATURES = (0.3, 1.5)  # raw log-probabilities do not move between these
RAW_TOLERANCE = 1e-3  # nats: two requests of one prompt, compared entry by entry
TOKENIZE_PATHS = (("/tokenize", "content"), ("/extras/tokenize", "input"),
                  ("/v1/tokenize", "prompt"))  # llama.cpp, llama-cpp-python, vLLM


@dataclass(frozen=True)
class EndpointProbe:
    """What the endpoint gave when asked; `errors` keeps what it said where it refused."""

    chat: bool = False
    completions: bool = False
    max_top_k: int = 0  # the most alternatives per token it returned (0: no logprobs)
    prompt_logprobs: str = "no"  # "yes", "shifted" (wrong by a token) or "no"
    raw: bool | None = None  # True: the model's own distribution, unaffected by sampling
    deterministic: bool | None = None  # the same answer and numbers twice at temperature 0
    largest_gap: float | None = None  # nats between those two answers' log-probabilities
    tokenize: str = ""  # the path that tokenises text, "" where none answered
    tokenizer: str = ""  # what its token ids say about the tokenizer
    errors: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, str]]:
        """The table a researcher reads: what was asked, what came back, what it means."""
        yes = {True: "yes", False: "no", None: "unknown"}
        return [
            {"check": "chat completions", "found": yes[self.chat],
             "means": "" if self.chat else self.errors.get("chat", "")},
            {"check": "completions (plain text)", "found": yes[self.completions],
             "means": "" if self.completions else self.errors.get("completions", "")},
            {"check": "largest top-k returned", "found": str(self.max_top_k),
             "means": self._top_k_means()},
            {"check": "prompt log-probabilities (echo)", "found": self.prompt_logprobs,
             "means": {"yes": "given text can be scored",
                       "shifted": "echoed, but each token carries the prediction after it: "
                                  "wrong, so given text is not scored",
                       "no": self.errors.get("echo", "given text cannot be scored")
                       }[self.prompt_logprobs]},
            {"check": "raw log-probabilities", "found": yes[self.raw],
             "means": {True: "the same at two temperatures: the model's own distribution",
                       False: "they change with temperature or top-p: processed, not the "
                              "model's distribution",
                       None: self.errors.get("raw", "")}[self.raw]},
            {"check": "deterministic at temperature 0", "found": yes[self.deterministic],
             "means": self._determinism_means()},
            {"check": "tokenizer", "found": self.tokenize or "not exposed",
             "means": self.tokenizer},
        ]

    def _determinism_means(self) -> str:
        if self.largest_gap is None:
            return self.errors.get("determinism", "")
        if self.largest_gap == 0.0:
            return "two identical requests gave the same text and log-probabilities"
        return f"two identical requests differ by up to {self.largest_gap:.2g} nats"

    def _top_k_means(self) -> str:
        if self.max_top_k == 0:
            return self.errors.get("logprobs", "no log-probabilities: nothing to colour")
        return (f"at most {self.max_top_k} alternatives per token: entropies, P(set) and KL "
                f"with it are lower bounds over its top-{self.max_top_k}")

    def to_json(self) -> str:
        """The probe as stored with the endpoint."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EndpointProbe:
        """A stored probe, checked field by field (PerplexError if it is not one)."""
        try:
            data = json.loads(text)
            found = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (TypeError, ValueError, AttributeError) as exc:
            raise PerplexError("The stored endpoint probe cannot be read: probe again.") from exc
        kinds = {"chat": bool, "completions": bool, "max_top_k": int, "prompt_logprobs": str,
                 "tokenize": str, "tokenizer": str, "errors": dict}
        if any(not isinstance(getattr(found, k), t) for k, t in kinds.items()) \
                or found.prompt_logprobs not in ("yes", "shifted", "no") \
                or not 0 <= found.max_top_k <= 10_000:
            raise PerplexError("The stored endpoint probe is not one Perplex wrote: probe "
                               "again.")
        return found


def probed_capabilities(base: Capabilities, probe: EndpointProbe) -> Capabilities:
    """`base` turned down to what the probe found, each loss with its reason."""
    why = dict(base.why_not)
    scores = base.scores_text and probe.prompt_logprobs == "yes" and probe.completions
    if not scores:
        why["scores_text"] = ("this endpoint cannot score given text: its prompt "
                              f"log-probabilities are {probe.prompt_logprobs} "
                              "(probed)")
    k = probe.max_top_k if base.max_top_k is None else min(base.max_top_k, probe.max_top_k)
    return replace(base, scores_text=scores, max_top_k=k, why_not=why)


def probe_endpoint(engine, local_tokenizer=None,
                   progress: Callable[[str], None] | None = None) -> EndpointProbe:
    """Ask `engine`'s server each question in turn; `progress(check)` before each.

    `engine` is built without a probe: its checks (the echo's) start from nothing known.
    """
    client, model = engine._client, engine.model
    found = EndpointProbe()
    errors: dict[str, str] = {}

    def ask(name: str, call):
        if progress is not None:
            progress(name)
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - any refusal is an answer worth recording
            errors[name] = _said(exc)
            return None

    chat = ask("chat", lambda: client.chat.completions.create(
        model=model, messages=PROBE_CHAT, max_tokens=2, temperature=0.0))
    plain = ask("completions", lambda: client.completions.create(
        model=model, prompt=PROBE_TEXT, max_tokens=2, temperature=0.0))
    found = replace(found, chat=chat is not None, completions=plain is not None)
    found = replace(found, max_top_k=_largest_top_k(client, model, found, ask, errors))
    if found.completions and found.max_top_k:
        found = replace(found, prompt_logprobs=_echo(engine, ask, errors),
                        raw=_raw(client, model, found.max_top_k, ask))
    if found.chat or found.completions:
        found = replace(found, **_determinism(client, model, found, ask))
    path, tokenizer = _tokenizer(engine, local_tokenizer, ask)
    return replace(found, tokenize=path, tokenizer=tokenizer, errors=errors)


def _said(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    status = getattr(exc, "status_code", None)
    return (f"{status}: " if status else "") + " ".join(str(message).split())[:200]


def _largest_top_k(client, model: str, found: EndpointProbe, ask, errors) -> int:
    """The most alternatives it returns per token (trying 20, 10, 5, 1 until one works)."""
    for k in TOP_KS:
        if found.chat:
            answer = ask("logprobs", lambda k=k: client.chat.completions.create(
                model=model, messages=PROBE_CHAT, max_tokens=2, temperature=0.0,
                logprobs=True, top_logprobs=k))
            content = answer and answer.choices and answer.choices[0].logprobs and \
                answer.choices[0].logprobs.content
            counts = [len(t.top_logprobs or []) for t in content] if content else []
        else:
            answer = ask("logprobs", lambda k=k: client.completions.create(
                model=model, prompt=PROBE_TEXT, max_tokens=2, temperature=0.0, logprobs=k))
            tops = answer and answer.choices and answer.choices[0].logprobs and \
                answer.choices[0].logprobs.top_logprobs
            counts = [len(t or {}) for t in tops] if tops else []
        if counts and min(counts) > 0:
            errors.pop("logprobs", None)
            return min(counts)
        if answer is not None and "logprobs" not in errors:
            errors["logprobs"] = "it answered without log-probabilities"
    return 0


def _echo(engine, ask, errors) -> str:
    """Whether echoed prompt log-probabilities are right, shifted, or not given."""
    from perplex.core.records import Message
    from perplex.core.tokens import PLAIN_TEXT_ROLE

    if ask("echo", lambda: engine.score([(Message(PLAIN_TEXT_ROLE, PROBE_TEXT),)], 5)) \
            is not None:
        return "yes"
    return "shifted" if "not its own predictions" in errors.get("echo", "") else "no"


def _top(client, model: str, k: int, **sampling) -> dict[str, float] | None:
    answer = client.completions.create(model=model, prompt=PROBE_TEXT, max_tokens=1,
                                       logprobs=k, seed=1, **sampling)
    tops = answer.choices[0].logprobs.top_logprobs if answer.choices and \
        answer.choices[0].logprobs else None
    return dict(tops[0]) if tops and tops[0] else None


def _raw(client, model: str, k: int, ask) -> bool | None:
    """Whether the top log-probabilities stay put when temperature and top-p move."""
    asked = [ask("raw", lambda t=t: _top(client, model, k, temperature=t))
             for t in TEMPERATURES]
    asked.append(ask("raw", lambda: _top(client, model, k, temperature=1.0, top_p=0.3)))
    if any(a is None for a in asked):
        return None
    first = asked[0]
    return all(set(a) == set(first) and
               max(abs(a[t] - first[t]) for t in first) <= RAW_TOLERANCE for a in asked[1:])


def _determinism(client, model: str, found: EndpointProbe, ask) -> dict:
    """Two identical temperature-0 requests: the same text, and how far their numbers move."""
    def once():
        if found.completions:
            answer = client.completions.create(model=model, prompt=PROBE_TEXT, max_tokens=12,
                                               temperature=0.0,
                                               **({"logprobs": 1} if found.max_top_k else {}))
            lp = answer.choices[0].logprobs
            return answer.choices[0].text, list(lp.token_logprobs) if lp else []
        answer = client.chat.completions.create(model=model, messages=PROBE_CHAT,
                                                max_tokens=12, temperature=0.0,
                                                logprobs=bool(found.max_top_k))
        content = answer.choices[0].logprobs.content if answer.choices[0].logprobs else []
        return answer.choices[0].message.content, [t.logprob for t in content or []]

    runs = [ask("determinism", once), ask("determinism", once)]
    if None in runs:
        return {}
    (text_a, lp_a), (text_b, lp_b) = runs
    gaps = [abs(a - b) for a, b in zip(lp_a, lp_b) if a is not None and b is not None
            and math.isfinite(a) and math.isfinite(b)]
    gap = max(gaps) if gaps else None
    return {"deterministic": text_a == text_b and (gap is None or gap == 0.0),
            "largest_gap": gap}


def _tokenizer(engine, local_tokenizer, ask) -> tuple[str, str]:
    """The path that tokenises text here, and whether its ids are a local tokenizer's."""
    import httpx

    root = engine.base_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {engine._client.api_key}"}
    for path, field_name in TOKENIZE_PATHS:
        body = {field_name: PROBE_TEXT, "model": engine.model}
        answer = ask("tokenize", lambda path=path, body=body: httpx.post(
            root + path, json=body, headers=headers, timeout=10.0))
        if answer is None or answer.status_code != 200:
            continue
        try:
            ids = answer.json().get("tokens")
        except ValueError:
            continue
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            continue
        note = f"{len(ids)} tokens for “{PROBE_TEXT}”"
        if local_tokenizer is not None:
            mine = local_tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
            note += ("; the same ids as the local model's tokenizer" if list(mine) == ids
                     else "; not the local model's tokenizer (other ids)")
        return path, note
    return "", "only token texts come back: ids and vocabulary are out of sight"
