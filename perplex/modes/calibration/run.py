"""Answering a dataset's items with a stated confidence, and reading every kind of confidence.

Each item is asked through a prompt template; the answer starts with the prefill
"Answer:" (on engines that can force text), so the option letter of a multiple-choice
answer comes right after it, where the full distribution gives the options' probabilities.
The answer is the rest of the line after "Answer:" (else the first line); the stated
confidence is parsed from the rest of the reply (`confidence.parse_confidence`, which never
reads an answer as a confidence). When the reply
states none and the engine can force text, the reply is continued once with the forced
line "Confidence:" (small models seldom write the second line unasked); the stored
generation is then that continuation, whose answer tokens keep their probabilities.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from perplex.core.calibration import Item, ItemResult
from perplex.core.errors import GenerationError, InputFormatError, PerplexError
from perplex.core.records import DecodeParams, Generation, Message, TokenRole
from perplex.core.tokens import TextPrefix
from perplex.modes.calibration.answers import LETTERS, chosen_option, match_aliases, match_choice
from perplex.modes.calibration.confidence import parse_confidence
from perplex.modes.calibration.judge import JUDGE_PROMPT, judge
from perplex.modes.calibration.token_confidence import (
    answer_span,
    option_probabilities,
    p_true,
    span_confidence,
)
from perplex.modes.runner import Finished
from perplex.workspace.calibration_store import (
    RunSummary,
    answered_item_ids,
    load_dataset,
    save_result,
)
from perplex.workspace.store import Store

PREFILL = "Answer:"
FREE_TEMPLATE = ('{question}\nReply with the answer on one line beginning "Answer:", then '
                 'your confidence that it is correct on a second line beginning "Confidence:" '
                 "(a percentage).")
CHOICE_TEMPLATE = ('{question}\n{options}\nReply with the letter of the correct option on one '
                   'line beginning "Answer:", then your confidence that it is correct on a '
                   'second line beginning "Confidence:" (a percentage).')
ASK_CONFIDENCE = "\nConfidence:"
WORDS_FREE = ('{question}\nReply with the answer on one line beginning "Answer:", then how '
              'sure you are that it is correct, in words (certain, very likely, likely, unsure, '
              'unlikely), on a second line beginning "Confidence:".')
WORDS_CHOICE = ('{question}\n{options}\nReply with the letter of the correct option on one '
                'line beginning "Answer:", then how sure you are that it is correct, in words '
                '(certain, very likely, likely, unsure, unlikely), on a second line beginning '
                '"Confidence:".')
TEMPLATES = {"confidence as a percentage": (FREE_TEMPLATE, CHOICE_TEMPLATE),
             "confidence in words": (WORDS_FREE, WORDS_CHOICE)}
DEFAULT_PARAMS = DecodeParams(max_new_tokens=32)
CONFIDENCE_TOKENS = 8  # new tokens for the stated confidence, when it is asked for


@dataclass(frozen=True)
class Template:
    """The prompts for free answers and for multiple choice ({question}, {options})."""

    free: str = FREE_TEMPLATE
    choice: str = CHOICE_TEMPLATE

    @classmethod
    def of_run(cls, settings: dict) -> Template:
        """The prompts a run's stored settings name."""
        return cls(settings["free"], settings["choice"])

    def __post_init__(self) -> None:
        """Each prompt must have the fields it needs, and no others."""
        for name, text, wanted in (("free-answer", self.free, {"question"}),
                                   ("multiple-choice", self.choice, {"question", "options"})):
            fields = set(re.findall(r"{(\w*)}", text))
            if not wanted <= fields or fields - wanted:
                raise InputFormatError(
                    f"The {name} prompt must contain {' and '.join(sorted(wanted))} in braces"
                    f"{' and no other field' if fields - wanted else ''}: write "
                    f"{', '.join('{' + w + '}' for w in sorted(wanted))} where they go.")

    def prompt(self, item: Item) -> str:
        """The user message asking `item`."""
        if item.multiple_choice:
            options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
            return self.choice.replace("{question}", item.question).replace("{options}",
                                                                            options)
        return self.free.replace("{question}", item.question)


def answer_line(reply: str) -> tuple[str, int]:
    """The answer in a reply, and where it starts: after "Answer:", else the first line."""
    found = re.search(r"answer\s*:\s*", reply, re.IGNORECASE)
    start = found.end() if found else len(reply) - len(reply.lstrip())
    line = reply[start:].split("\n", 1)[0]
    return line.strip(), start + (len(line) - len(line.lstrip()))


def answer_item(engine, item: Item, template: Template = Template(),
                params: DecodeParams = DEFAULT_PARAMS, system: tuple[Message, ...] = (),
                with_p_true: bool = False, judge_engine=None,
                judge_prompt: str = JUDGE_PROMPT, match_rule: str = "exact"
                ) -> tuple[Generation, ItemResult]:
    """Ask `item`, then check the answer and read every confidence the engine allows.

    With `judge_engine`, that model also judges the answer (`judge.judge`).
    """
    messages = system + (Message("user", template.prompt(item)),)
    prefill = PREFILL if engine.capabilities.token_ids else ""
    generation = engine.generate(messages, params, prefill=prefill).run()
    again = _confidence_prefill(_reply(engine, generation)[0]) if prefill else None
    if again is not None:
        generation = engine.generate(messages, _asking(params), prefill=again).run()
    return generation, read_result(engine, item, messages, generation, prefill, with_p_true,
                                   judge_engine, judge_prompt, match_rule)


def answer_batch(engine, items: Sequence[Item], template: Template = Template(),
                 params: DecodeParams = DEFAULT_PARAMS, system: tuple[Message, ...] = (),
                 with_p_true: bool = False, judge_engine=None,
                 judge_prompt: str = JUDGE_PROMPT, match_rule: str = "exact"
                 ) -> list[tuple[Generation, ItemResult]]:
    """`answer_item` for several items, their generations decoded together (local engines).

    Greedy only; the same answers as one at a time, but for near-ties (see
    `engine.local.batch`).
    """
    asked = [system + (Message("user", template.prompt(item)),) for item in items]

    generations = engine.generate_many(
        [(m, PREFILL) for m in asked], params,
        follow_up=lambda _, reply: _confidence_prefill(reply), follow_params=_asking(params))
    return [(g, read_result(engine, item, m, g, PREFILL, with_p_true, judge_engine,
                            judge_prompt, match_rule))
            for item, m, g in zip(items, asked, generations)]


def _confidence_prefill(reply: str) -> str | None:
    """The forced start that asks again for a confidence `reply` does not state.

    `reply` includes its prefill. None when it states one, even one that cannot be read.
    """
    stated = parse_confidence(reply)
    if stated.value is None and stated.kind == "missing":
        return f"{PREFILL} {answer_line(reply)[0]}{ASK_CONFIDENCE}"
    return None


def _asking(params: DecodeParams) -> DecodeParams:
    return replace(params, max_new_tokens=CONFIDENCE_TOKENS, stop_strings=("\n",))


def read_result(engine, item: Item, messages: tuple[Message, ...], generation: Generation,
                prefill: str, with_p_true: bool = False, judge_engine=None,
                judge_prompt: str = JUDGE_PROMPT, match_rule: str = "exact") -> ItemResult:
    """The answer in `generation` checked, with every confidence the engine allows.

    A free answer is checked against the item's aliases under `match_rule`
    (`answers.MATCH_RULES`).
    """
    reply, response = _reply(engine, generation)
    stated = parse_confidence(reply)
    answer, start = answer_line(reply)
    confidences: dict[str, float | None] = dict.fromkeys(
        ("verbalized", "span product", "span geometric mean", "first token", "options",
         "P(True)"))
    confidences["verbalized"] = stated.value
    span = answer_span(response, start, start + len(answer)) if answer else []
    if span:
        summary = span_confidence(span)
        confidences.update({"span product": summary.product,
                            "span geometric mean": summary.geometric_mean,
                            "first token": summary.first})
    if item.multiple_choice:
        check = match_choice(answer, item.choices, item.answer_index)
        picked, _ = chosen_option(answer, item.choices)
        if picked is not None and engine.capabilities.full_distribution and prefill:
            context = list(engine.encode(messages, True).ids) + list(engine.encode(
                (Message("text", prefill),), False, TextPrefix.NONE).ids)
            confidences["options"] = float(option_probabilities(
                engine, context, len(item.choices))[picked])
    else:
        check = match_aliases(answer, item.aliases, match_rule)
    if with_p_true and answer and engine.capabilities.full_distribution:
        confidences["P(True)"] = p_true(engine, item.question, answer,
                                        tuple(m for m in messages if m.role == "system"))
    verdict = None
    if judge_engine is not None:
        references = (f"{LETTERS[item.answer_index]}. {item.choices[item.answer_index]}",) \
            if item.multiple_choice else item.aliases
        verdict = judge(judge_engine, item.question, references, answer, judge_prompt)
    return ItemResult(
        item_id=item.id, generation_id=generation.id, answer=answer, stated=stated.source,
        stated_kind=stated.kind, confidences=confidences, correct=check.correct,
        matched=check.matched, judged=verdict.correct if verdict else None,
        judge_p=verdict.p_correct if verdict else None)


def _reply(engine, generation: Generation):
    """The answer's text and its steps, without the end-of-turn token."""
    eos = engine.info.eos_ids
    response = [s for s in generation.steps if s.role is TokenRole.RESPONSE
                and s.token_id not in eos]
    return "".join(s.text for s in response), response


def answer_items(engine, items: Sequence[Item], batch_size: int = 1, **options):
    """Answer items, yielding (generation, result) in order as each is done.

    With `batch_size` > 1 on an engine that decodes batches, that many items are decoded
    together. A failure stops the run with its message; the items before it are done.
    """
    batched = batch_size > 1 and hasattr(engine, "generate_many")
    for start in range(0, len(items), batch_size if batched else 1):
        chunk = items[start:start + (batch_size if batched else 1)]
        try:
            if batched:
                yield from answer_batch(engine, chunk, **options)
            else:
                yield answer_item(engine, chunk[0], **options)
        except PerplexError as exc:
            where = chunk[0].id if len(chunk) == 1 else f"{chunk[0].id}…{chunk[-1].id}"
            raise type(exc)(f"Item {where}: {exc}") from exc


@dataclass(frozen=True)
class CalibrationItems:
    """A calibration run's items as the runner's `ItemSource`.

    The items are the dataset's first `limit`; an item is done once its result is stored.
    An item that cannot be answered stops the run with its message (Resume tries it
    again): calibration keeps no failed items, every number is over answered ones.
    """

    store: Store
    run_id: str
    items: tuple[Item, ...]

    @classmethod
    def of(cls, store: Store, run: RunSummary) -> CalibrationItems:
        """The run's items, up to its limit."""
        dataset = load_dataset(store, run.dataset_id)
        limit = min(len(dataset.items), int(run.settings.get("limit", len(dataset.items))))
        return cls(store, run.id, tuple(dataset.items[:limit]))

    def _done(self) -> set[str]:
        return answered_item_ids(self.store, self.run_id)

    def counts(self) -> tuple[int, int, int]:
        """(done, 0, total)."""
        wanted = {item.id for item in self.items}
        return len(self._done() & wanted), 0, len(self.items)

    def pending(self, limit: int) -> list[tuple[int, Item]]:
        """(ordinal, item) of the next items without a result."""
        done = self._done()
        return [(n, item) for n, item in enumerate(self.items) if item.id not in done][:limit]

    def finish(self, item: tuple[int, Item], outcome, seconds: float) -> None:
        """Store the item's answer and verdict."""
        generation, result = outcome.result
        save_result(self.store, self.run_id, item[0], result, generation)

    def fail(self, item: tuple[int, Item], error: str, seconds: float) -> None:
        """Stop the run with the item's error."""
        raise GenerationError(f"Item {item[1].id}: {error}")


def calibration_work(engine, settings: dict, judge_engine=None):
    """What the runner does with a chunk of (ordinal, item): each item's answer and verdict."""
    template = Template.of_run(settings)

    def work(chunk):
        answered = answer_items(
            engine, [item for _, item in chunk], batch_size=len(chunk), template=template,
            with_p_true=settings["with_p_true"], judge_engine=judge_engine,
            judge_prompt=settings.get("judge_prompt", JUDGE_PROMPT),
            match_rule=settings.get("match_rule", "exact"))
        return [Finished(pair, sum(s.role is TokenRole.RESPONSE for s in pair[0].steps))
                for pair in answered]

    return work
