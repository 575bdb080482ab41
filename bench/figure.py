"""The README's figure of long traces and big datasets, drawn from `make bench`'s output.

    python -m bench.figure bench-output.txt docs/long_traces.svg

Reads the lines of the paint, store and dataset stages (`bench/token_paint.py`,
`bench/long_traces.py`, `bench/datasets.py`) and draws each cost against length (tokens)
or count (transcripts) on log axes, with the issue's targets marked. Plain SVG: no
plotting library, no browser.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

_NUMBER = r"([\d,]+(?:\.\d+)?)"


def _num(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass
class Series:
    """One cost at each size: (size, seconds), drawn as a line of points."""

    label: str
    colour: str
    dashed: bool = False
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A target: at most `seconds` at size `at`."""

    label: str
    at: float
    seconds: float
    colour: str


@dataclass
class Panel:
    """One plot: its x axis's unit, its series and targets."""

    title: str
    unit: str
    series: list[Series]
    targets: list[Target]


def panels_from(output: str) -> list[Panel]:
    """The two panels (by trace length, by dataset size) from bench output text."""
    paint, paint_base = Series("first paint", "#1d4ed8"), Series("first paint, one span per "
                                                                "token", "#1d4ed8", True)
    hover, hover_base = Series("hover", "#d97706"), Series("hover, one span per token",
                                                           "#d97706", True)
    load = Series("load a stored trace", "#059669")
    ingest, plain = Series("ingest (Batch)", "#7c3aed"), Series("plain DuckDB insert",
                                                                "#7c3aed", True)
    flags, filters = Series("flag counts", "#dc2626"), Series("filter, sorted", "#0891b2")
    for line in output.splitlines():
        if m := re.match(rf"paint\s+{_NUMBER} tokens: first paint {_NUMBER} s vs {_NUMBER} s"
                         rf".*?hover near token [\d,]+ {_NUMBER} ms vs {_NUMBER} ms", line):
            n = _num(m[1])
            paint.points.append((n, _num(m[2])))
            paint_base.points.append((n, _num(m[3])))
            hover.points.append((n, _num(m[4]) / 1000))
            hover_base.points.append((n, _num(m[5]) / 1000))
        elif m := re.match(rf"store\s+{_NUMBER} tokens \(top-\d+\): write [\d.]+ s, load "
                           rf"{_NUMBER} s", line):
            load.points.append((_num(m[1]), _num(m[2])))
        elif m := re.match(rf"dataset\s+{_NUMBER} transcripts .*?ingest {_NUMBER} s .*? plain "
                           rf"DuckDB insert {_NUMBER} s .*?flags {_NUMBER} ms, a filter .*? "
                           rf"{_NUMBER} ms, every item", line):
            n = _num(m[1])
            ingest.points.append((n, _num(m[2])))
            plain.points.append((n, _num(m[3])))
            flags.points.append((n, _num(m[4]) / 1000))
            filters.points.append((n, _num(m[5]) / 1000))
    return [
        Panel("A long trace", "tokens", [paint, paint_base, hover, hover_base, load],
              [Target("first paint ≤ 0.5 s at 30,000 tokens", 30_000, 0.5, "#1d4ed8"),
               Target("load ≤ 0.3 s at 30,000 tokens", 30_000, 0.3, "#059669"),
               Target("hover ≤ 16 ms at token 29,000", 30_000, 0.016, "#d97706")]),
        Panel("A big dataset", "transcripts of 500 tokens", [ingest, plain, flags, filters],
              [Target("flags and filters ≤ 200 ms at 10,000", 10_000, 0.2, "#dc2626")]),
    ]


W, H = 440, 380  # one panel
LEFT, RIGHT, TOP, BOTTOM = 58, 26, 30, 166  # margins; the legend sits under the axes


def _log_range(values: list[float]) -> tuple[float, float]:
    lo, hi = math.log10(min(values)), math.log10(max(values))
    return math.floor(lo), math.ceil(hi) if math.ceil(hi) > math.floor(lo) else math.floor(lo) + 1


def _seconds_label(exponent: int) -> str:
    seconds = 10.0 ** exponent
    if seconds >= 1:
        return f"{seconds:g} s"
    return f"{seconds * 1000:g} ms"


def panel_svg(panel: Panel, x0: int) -> list[str]:
    """The SVG elements of one panel, its left edge at `x0`."""
    drawn = [s for s in panel.series if s.points]
    xs = [x for s in drawn for x, _ in s.points] + [t.at for t in panel.targets]
    ys = [y for s in drawn for _, y in s.points] + [t.seconds for t in panel.targets]
    out = [f'<text x="{x0 + LEFT}" y="18" font-weight="bold">{escape(panel.title)}</text>']
    if not drawn:
        return out + [f'<text x="{x0 + LEFT}" y="{TOP + 40}">not measured</text>']
    (xa, xb), (ya, yb) = _log_range(xs), _log_range(ys)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return x0 + LEFT + (math.log10(x) - xa) / (xb - xa) * plot_w

    def py(y: float) -> float:
        return TOP + (yb - math.log10(y)) / (yb - ya) * plot_h

    out.append(f'<rect x="{x0 + LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
               'fill="none" stroke="#999"/>')
    for e in range(ya, yb + 1):
        y = py(10.0 ** e)
        out.append(f'<line x1="{x0 + LEFT}" x2="{x0 + LEFT + plot_w}" y1="{y:.1f}" '
                   f'y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{_seconds_label(e)}</text>')
    for e in range(xa, xb + 1):
        x = px(10.0 ** e)
        out.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">'
                   f'{10 ** e:,}</text>')
    out.append(f'<text x="{x0 + LEFT + plot_w / 2}" y="{TOP + plot_h + 30}" '
               f'text-anchor="middle">{escape(panel.unit)} (log)</text>')
    for s in drawn:
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(s.points))
        dash = ' stroke-dasharray="5,4"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                   f'stroke-width="2"{dash}/>')
        for x, y in s.points:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{s.colour}"/>')
    for t in panel.targets:  # a thick tick at the size the target is set for
        x, y = px(t.at), py(t.seconds)
        out.append(f'<line x1="{x - 12:.1f}" x2="{x + 12:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="{t.colour}" stroke-width="4" opacity="0.6"/>')
    for k, s in enumerate(drawn):
        y = TOP + plot_h + 48 + 15 * k
        dash = ' stroke-dasharray="5,4"' if s.dashed else ""
        out.append(f'<line x1="{x0 + LEFT}" x2="{x0 + LEFT + 22}" y1="{y - 4}" y2="{y - 4}" '
                   f'stroke="{s.colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x0 + LEFT + 28}" y="{y}">{escape(s.label)}</text>')
    for k, t in enumerate(panel.targets):
        y = TOP + plot_h + 48 + 15 * (len(drawn) + k)
        out.append(f'<line x1="{x0 + LEFT}" x2="{x0 + LEFT + 22}" y1="{y - 4}" y2="{y - 4}" '
                   f'stroke="{t.colour}" stroke-width="4" opacity="0.6"/>')
        out.append(f'<text x="{x0 + LEFT + 28}" y="{y}">target: {escape(t.label)}</text>')
    return out


def figure_svg(output: str) -> str:
    """The whole figure: both panels side by side."""
    body = [e for k, panel in enumerate(panels_from(output)) for e in panel_svg(panel, k * W)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" '
            f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" '
            f'fill="white"/>{"".join(body)}</svg>\n')


def main() -> None:
    source, target = sys.argv[1:3]
    Path(target).write_text(figure_svg(Path(source).read_text()), encoding="utf-8")


if __name__ == "__main__":
    main()
