"""The token view at 2,000, 10,000 and 30,000 tokens, against one span per token.

Two pages in the same Chromium, from the same synthetic trace (`synthetic_generation`,
top-20 per token, a paragraph every 80 tokens):

- ours: the token view's own JavaScript and CSS, mounted in a shadow root as Streamlit
  mounts it, given the payload the app sends (every alternative up to 2,000 tokens; beyond,
  the tooltip's three, a click fetches the rest, and the tokens come as columns);
- the baseline: a static page with one coloured span per token in the same scroll box
  and styles, its numbers in a `title`, the way a viewer is usually written.

Measured in the page, the same way on both: first paint (navigation start to the frame
after the tokens are drawn, median of five loads), a hover near the end (from the
mouseover reaching the page until its handlers, style and layout are done, real mouse
moves, median of five tokens; the paint then waits for the next frame, as any change
does), scrolling
(frames per second while the box scrolls 240 px a frame for one second, and the longest
frame), and the tab's JavaScript heap and DOM nodes (Chrome's own counters).
"""

from __future__ import annotations

import html
import json
import statistics
import tempfile
from pathlib import Path

from bench.long_traces import SIZES, synthetic_generation
from perplex.ui.components import token_view

PAINT_TARGET_S = 0.5  # issue: first paint of 30,000 tokens in 0.5 s at most
PAINT_RATIO_TARGET = 0.25  # and at most a quarter of the baseline's
HOVER_TARGET_MS = 16.0
FPS_TARGET = 50.0
HOVER_AT = 29 / 30  # of the trace: token 29,000 of 30,000
LOADS = 5
HOVERS = 5

_COMPONENT_DIR = Path(token_view.__file__).parent
_JS_FILES = ("token_view_menu.js", "token_view_nav.js", "token_view_chunks.js", "token_view.js")
# Both pages call this once their tokens are in the DOM: the time of the next frame.
_MARK_PAINT = ("requestAnimationFrame(() => setTimeout(() => "
               "{ window.painted = performance.now(); }));")


def _json_script(data: object) -> str:
    return json.dumps(data).replace("</", "<\\/")


def ours_page(payload: dict) -> str:
    js = "\n".join((_COMPONENT_DIR / name).read_text(encoding="utf-8") for name in _JS_FILES)
    js = js.replace("export default function", "window.mountTokenView = function")
    css = (_COMPONENT_DIR / "token_view.css").read_text(encoding="utf-8")
    return f"""<!doctype html><html><head><meta charset="utf-8"></head>
<body style="margin:0"><div id="host" style="width:1000px"></div>
<script id="payload" type="application/json">{_json_script(payload)}</script>
<script id="css" type="application/json">{_json_script(css)}</script>
<script>{js}
const shadow = document.getElementById("host").attachShadow({{mode: "open"}});
shadow.innerHTML = "<style>" + JSON.parse(document.getElementById("css").textContent)
  + "</style>" + {json.dumps(token_view._HTML)};
window.mountTokenView({{data: JSON.parse(document.getElementById("payload").textContent),
  parentElement: shadow, setTriggerValue: () => {{}}}});
{_MARK_PAINT}
</script></body></html>"""


def baseline_page(payload: dict) -> str:
    css = (_COMPONENT_DIR / "token_view.css").read_text(encoding="utf-8")
    spans = "".join(
        f'<span class="tok {tok["c"]}" data-index="{i}" title="p = {tok.get("p")}">'
        f'{html.escape(tok["t"])}</span>' for i, tok in enumerate(payload["tokens"]))
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>{css}</style></head>
<body style="margin:0"><div style="width:1000px" class="tv-root ready">
<div class="tv-tokens">{spans}</div></div>
<script>{_MARK_PAINT}</script></body></html>"""


# The scroll box, in the light DOM (baseline) or in the view's shadow root (ours).
_BOX = """(() => {
  const host = document.getElementById("host");
  return (host ? host.shadowRoot : document).querySelector(".tv-tokens");
})()"""

_SCROLL_TO = f"""async (fraction) => {{
  const box = {_BOX};
  box.scrollTop = box.scrollHeight * fraction - box.clientHeight / 2;
  for (let k = 0; k < 4; k++) await new Promise((r) => requestAnimationFrame(r));
  const r = box.getBoundingClientRect();
  return [...box.querySelectorAll(".tok")].filter((t) => {{
    const q = t.getBoundingClientRect();
    return q.top > r.top + 40 && q.bottom < r.bottom - 40 && q.width > 4;
  }}).map((t) => Number(t.dataset.index));
}}"""

_POINT_AT = f"""(index) => {{
  const t = {_BOX}.querySelector(`.tok[data-index="${{index}}"]`);
  const q = t.getBoundingClientRect();
  return [q.left + q.width / 2, q.top + q.height / 2];
}}"""

# On the box: a move between two nodes of one shadow root never reaches the document.
_WATCH_HOVER = f"""() => {{
  window.hoverMs = undefined;
  {_BOX}.addEventListener("mouseover", (ev) => {{
    const at = performance.now();  // the event reached the page (not ev.timeStamp: the
    // time the browser took to deliver it is the same with or without any page on it)
    setTimeout(() => {{
      document.body.getBoundingClientRect();  // style and layout of what the hover changed
      window.hoverMs = performance.now() - at;
    }});
  }}, {{capture: true, once: true}});
}}"""

_SCROLL_FPS = f"""async () => {{
  const box = {_BOX};
  box.scrollTop = 0;
  await new Promise((r) => requestAnimationFrame(r));
  const start = performance.now();
  let last = start, worst = 0, frames = 0;
  while (performance.now() - start < 1000) {{
    await new Promise((r) => requestAnimationFrame(r));
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
    frames++;
    box.scrollTop += 240;
  }}
  return [frames * 1000 / (last - start), worst];
}}"""


def _measure(browser, path: Path, n_tokens: int) -> dict:
    """First paint, hover near the end, scrolling and memory of one page."""
    paints = []
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        for _ in range(LOADS):
            page.goto(path.as_uri())
            page.wait_for_function("window.painted !== undefined", timeout=120_000)
            paints.append(page.evaluate("window.painted") / 1000)
        spans = page.evaluate(f"{_BOX}.querySelectorAll('.tok').length")
        session = page.context.new_cdp_session(page)
        session.send("Performance.enable")
        metrics = {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}
        shown = page.evaluate(_SCROLL_TO, HOVER_AT)
        target = round(n_tokens * HOVER_AT)
        near = sorted(shown, key=lambda i: abs(i - target))[:HOVERS]
        hovers = []
        for index in near:
            x, y = page.evaluate(_POINT_AT, index)
            page.mouse.move(5, 5)
            page.evaluate(_WATCH_HOVER)
            page.mouse.move(x, y)
            page.wait_for_function("window.hoverMs !== undefined", timeout=30_000)
            hovers.append(page.evaluate("window.hoverMs"))
        fps, worst = page.evaluate(_SCROLL_FPS)
    finally:
        page.close()
    return {"paint": statistics.median(paints), "hover": statistics.median(hovers),
            "hovered": near, "spans": spans, "fps": fps, "worst": worst,
            "heap": metrics["JSHeapUsedSize"] / 2**20, "nodes": int(metrics["Nodes"])}


def measure_size(browser, n_tokens: int, folder: Path) -> tuple[dict, dict]:
    gen = synthetic_generation(n_tokens)
    long_view = n_tokens > token_view.LONG_VIEW_TOKENS  # as the app sends it
    payload = token_view.token_payload(
        gen.response_steps, 0.7, 0.3,
        alternatives=token_view.ALTERNATIVES_SHOWN if long_view else None)
    ours = folder / f"ours-{n_tokens}.html"
    base = folder / f"baseline-{n_tokens}.html"
    base.write_text(baseline_page(payload), encoding="utf-8")
    if long_view:
        tokens = payload.pop("tokens")
        payload["cols"] = token_view.token_columns(tokens)
    ours.write_text(ours_page(payload), encoding="utf-8")
    return _measure(browser, ours, n_tokens), _measure(browser, base, n_tokens)


def _line(n: int, ours: dict, base: dict) -> str:
    return (f"paint   {n:>6,} tokens: first paint {ours['paint']:.3f} s vs {base['paint']:.3f} s "
            f"one span per token ({ours['paint'] / base['paint']:.2f}x); hover near token "
            f"{ours['hovered'][0]:,} {ours['hover']:.1f} ms vs {base['hover']:.1f} ms; scroll "
            f"{ours['fps']:.0f} fps (longest frame {ours['worst']:.0f} ms) vs {base['fps']:.0f} "
            f"fps ({base['worst']:.0f} ms); heap {ours['heap']:.1f} MiB, {ours['nodes']:,} DOM "
            f"nodes vs {base['heap']:.1f} MiB, {base['nodes']:,} nodes")


def bench_token_paint(sizes: tuple[int, ...] = SIZES, browser=None
                      ) -> dict[int, tuple[dict, dict]]:
    """Measure and print each size, then the growth; in `browser`, else a Chromium of its own."""
    if browser is None:
        from playwright.sync_api import sync_playwright

        from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

        with sync_playwright() as p:
            own = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                return bench_token_paint(sizes, own)
            finally:
                own.close()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            results[n] = measure_size(browser, n, Path(folder))
            print(_line(n, *results[n]), flush=True)
    _print_growth(results)
    return results


def _print_growth(results: dict[int, tuple[dict, dict]]) -> None:
    small, large = min(results), max(results)
    (o1, b1), (o2, b2) = results[small], results[large]
    grow = lambda key, a, b: b[key] / a[key] if a[key] else float("nan")  # noqa: E731
    print(f"paint   growth {small:,} -> {large:,} tokens ({large / small:.0f}x): first paint "
          f"x{grow('paint', o1, o2):.1f} (baseline x{grow('paint', b1, b2):.1f}), hover "
          f"x{grow('hover', o1, o2):.1f} (x{grow('hover', b1, b2):.1f}), DOM nodes "
          f"x{grow('nodes', o1, o2):.1f} (x{grow('nodes', b1, b2):.1f}), heap "
          f"x{grow('heap', o1, o2):.1f} (x{grow('heap', b1, b2):.1f})", flush=True)
    ratio = o2["paint"] / b2["paint"]
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    paint_met = o2["paint"] <= PAINT_TARGET_S and ratio <= PAINT_RATIO_TARGET
    print(f"paint   targets at {large:,} tokens: first paint <= {PAINT_TARGET_S} s and <= "
          f"{PAINT_RATIO_TARGET}x: {met(paint_met)}"
          f"; hover <= {HOVER_TARGET_MS:.0f} ms: {met(o2['hover'] <= HOVER_TARGET_MS)}; "
          f"scroll >= {FPS_TARGET:.0f} fps: {met(o2['fps'] >= FPS_TARGET)}", flush=True)


if __name__ == "__main__":
    bench_token_paint()
