"""What the token view shows of a decoding run: each answer token marked by what was done.

Contrastive decoding and DoLa: tokens whose choice differs from plain greedy's are coloured,
and the tooltip has both distributions' top 3 and the best scores. Speculative decoding:
accepted drafts, replacements and bonus tokens each have a colour, and a rejected draft is
drawn struck through before the token that replaced it.
"""

from __future__ import annotations

from perplex.core.decoding import ContrastStep, DraftToken, MethodRun
from perplex.core.plots import short_prob, visible_token
from perplex.ui.components.token_view_types import Overlay

CHANGED = "rgba(217, 95, 2, 0.55)"  # the method chose another token than greedy
SAME = "rgba(43, 123, 186, 0.12)"
KIND_COLOURS = {"accepted": "rgba(43, 123, 186, 0.30)", "replacement": "rgba(217, 95, 2, 0.50)",
                "bonus": "rgba(27, 158, 119, 0.35)"}
KIND_WORDS = {"accepted": "drafted and accepted",
              "replacement": "the target's token where it rejected the draft",
              "bonus": "the target's own token after the accepted drafts"}


def names(run: MethodRun) -> tuple[str, str]:
    """What a and b are called for this method."""
    return ("final layer", "premature layer") if run.method == "dola" else ("expert", "amateur")


def contrast_overlay(run: MethodRun) -> Overlay:
    """Changed choices coloured; tooltips with a's and b's numbers, b's top 3 beside a's."""
    a, b = names(run)
    lines, second = [], []
    for record in run.contrast:
        lines.append(_contrast_lines(record, a, b))
        second.append(tuple((text, p, i == record.token_id) for i, p, text in record.top_b))
    return Overlay(tuple(CHANGED if r.changed else SAME for r in run.contrast), tuple(lines),
                   label=f"{a} (the target, temperature 1)", second_label=b,
                   second=tuple(second))


def _contrast_lines(record: ContrastStep, a: str, b: str) -> tuple[str, ...]:
    greedy_text = next((text for i, _, text in record.top_a if i == record.greedy_id), "")
    head = (f"changed: plain greedy picks “{visible_token(greedy_text)}”" if record.changed
            else "the same token as plain greedy")
    lines = [head, f"p {a} {short_prob(record.p_a)} · p {b} {short_prob(record.p_b)} · "
                   f"score {record.score:+.3f} · rank {record.rank_a} under the {a}",
             f"plausible set: {record.plausible} tokens · JS({a}, {b}) {record.js:.4f} nats"]
    if record.layer is not None:
        lines.append(f"premature layer {record.layer}")
    if record.constraint_changed:
        lines.append("the best score over the whole vocabulary was outside the plausible set")
    best = " · ".join(f"“{visible_token(text)}” {score:+.2f}" for _, score, text in
                      record.top_score)
    lines.append(f"best scores: {best}")
    return tuple(lines)


def speculative_overlay(run: MethodRun) -> Overlay:
    """Per answer token its kind's colour; rejected drafts struck through before replacements."""
    by_round: dict[int, list[DraftToken]] = {}
    for draft in run.drafts:
        by_round.setdefault(draft.round, []).append(draft)
    colours, lines, struck = [], [], []
    slot_in_round: dict[int, int] = {}
    for token in run.emitted:
        drafts = by_round.get(token.round, [])
        colours.append(KIND_COLOURS[token.kind])
        row = [KIND_WORDS[token.kind] + f" (round {token.round + 1})"]
        rejected = [d for d in drafts if d.verified and not d.accepted]
        if token.kind == "accepted":
            slot = slot_in_round.get(token.round, 0)
            slot_in_round[token.round] = slot + 1
            d = drafts[slot]
            row.append(f"draft position {slot + 1} · q {short_prob(d.q)} · p target "
                       f"{short_prob(d.p)}")
            struck.append(())
        elif token.kind == "replacement" and rejected:
            d = rejected[0]
            row.append(f"rejected draft “{visible_token(d.text)}” (position {d.slot + 1}, "
                       f"q {short_prob(d.q)}, p target {short_prob(d.p)})")
            discarded = [x for x in drafts if not x.verified]
            if discarded:
                row.append(f"{len(discarded)} later drafted token(s) discarded unchecked: "
                           + " ".join(f"“{visible_token(x.text)}”" for x in discarded))
            struck.append((d.text,))
        else:
            struck.append(())
        lines.append(tuple(row))
    return Overlay(tuple(colours), tuple(lines), label="target (temperature 1)",
                   struck=tuple(struck))


def legend(run: MethodRun) -> str:
    """The colour key, in words."""
    if run.method == "speculative":
        return ("Blue: drafted and accepted · orange: the target's replacement, after the "
                "rejected draft struck through in red · green: the target's bonus token.")
    a, _ = names(run)
    return (f"Orange: the method chose another token than plain greedy decoding of the {a} "
            "would on the same text; pale blue: the same token. Hover for both "
            "distributions and the scores.")
