// The token view: one <span class="tok"> per token, coloured by probability, with a
// hover tooltip; a click opens the menu (token_view_menu.js) and, like every menu
// action and a drag over tokens, sends one trigger value "event" back to Python:
// {kind, index, pos, ...} (see perplex/ui/token_view_types.py for the kinds).
//
// Token and alternative texts are untrusted (model output, uploads): every piece of
// text goes through createTextNode / textContent, never innerHTML.
//
// Streamlit calls this function again, on the same shadow root, each time `data`
// changes; the cleanup it returns runs only on unmount. So the DOM and the event
// listeners are created once per root and later calls only update them.
//
// Streaming: each update within one script run is a new element (a key may be used
// once per run), mounted in one of two alternating slots. The root stays hidden until
// its tokens are drawn; then the newest instance of a `group` shows itself and hides
// the older ones, all in one task, so the page never paints an empty view.

const STATES = new WeakMap(); // shadow root -> state of the view mounted there
const GROUPS = new Map(); // streaming group -> states of its live instances
const TIP_GAP = 6; // px between a token and its tooltip
const EDGE = 4; // px kept free at the viewport's edges

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// A token's text with its whitespace made visible, for the tooltip and the menu: the one
// convention of every view and figure (core.plots.visible_token): · space, ↵ line break,
// ⇥ tab.
function visible(text) {
  return text
    .replace(/ /g, "\u00b7")
    .replace(/\t/g, "\u21e5")
    .replace(/\r/g, "\\r")
    .replace(/\n/g, "\u21b5");
}

function fmtProb(p) {
  if (p === null || p === undefined) return "\u2013";
  return String(p);
}

// Fill a token span: plain text, with faint markers where whitespace would be invisible.
function fillToken(span, text) {
  if (text === "") {
    span.appendChild(el("span", "ws", "\u2205"));
    return;
  }
  if (/^ +$/.test(text)) {
    span.appendChild(el("span", "ws", "\u00b7".repeat(text.length)));
    return;
  }
  const parts = text.split("\n");
  parts.forEach((part, i) => {
    if (i > 0) {
      span.appendChild(el("span", "ws", "\u21b5"));
      span.appendChild(document.createTextNode("\n"));
    }
    if (part) {
      const tabs = part.split("\t");
      tabs.forEach((chunk, j) => {
        if (j > 0) span.appendChild(el("span", "ws", "\u21e5\t"));
        if (chunk) span.appendChild(document.createTextNode(chunk));
      });
    }
  });
}

function makeSpan(tok, index) {
  const span = el("span", "tok " + tok.c);
  if (tok.f) span.classList.add("forced");
  if (tok.role && tok.role !== "response") span.classList.add("role-" + tok.role);
  if (tok.t.indexOf("\n") >= 0) span.classList.add("nl");
  span.dataset.index = String(index);
  if (tok.bg) {  // an overlay's colour (e.g. a divergence scale) instead of the class's
    span.classList.add("overlay");
    span.style.backgroundColor = tok.bg;
  }
  if (Array.isArray(tok.s)) {  // rejected drafts, struck through, before their replacement
    for (const raw of tok.s) {
      const text = String(raw);
      span.appendChild(el("span", "struck", text.trim() ? text : visible(text)));
    }
  }
  fillToken(span, tok.t);
  return span;
}

function sameToken(a, b) {
  return a.t === b.t && a.p === b.p && a.c === b.c && a.f === b.f && a.pos === b.pos
    && a.h === b.h && a.r === b.r && a.id === b.id && a.bg === b.bg
    && JSON.stringify(a.s) === JSON.stringify(b.s);
}

const TIP_ALTERNATIVES = 3; // the menu lists them all

function buildTip(tip, tok, notes, alert) {
  tip.replaceChildren();
  const head = el("div", "tip-head");
  head.appendChild(el("span", "tip-text", "\u201c" + visible(tok.t) + "\u201d"));
  if (tok.f) head.appendChild(el("span", "tip-badge", "forced"));
  if (tok.role && tok.role !== "response") head.appendChild(el("span", "tip-badge", tok.role));
  tip.appendChild(head);
  if (alert) tip.appendChild(el("div", "tip-row tip-alert", "\u26a0 alert: " + alert));

  if (tok.p === null || tok.p === undefined) {
    tip.appendChild(el("div", "tip-row tip-faint", "no prediction: nothing before this token"));
    addNotesToTip(tip, notes);
    return;
  }
  const line = (...pairs) => {
    const row = el("div", "tip-row");
    pairs.forEach(([label, value], i) => {
      if (i > 0) row.appendChild(el("span", "tip-sep", "\u2003"));
      row.appendChild(el("span", "tip-label", label + " "));
      row.appendChild(el("span", "tip-value", value));
    });
    tip.appendChild(row);
  };
  const first = [["p =", fmtProb(tok.p)]];
  if (tok.lp !== null && tok.lp !== undefined) first.push(["log p =", String(tok.lp)]);
  line(...first);
  const second = [];
  if (tok.h !== null && tok.h !== undefined) {
    second.push([tok.he ? "H \u2265" : "H =", tok.h.toFixed(2) + " nats"
      + (tok.he ? " (top-k estimate)" : "")]);
  }
  if (tok.r !== null && tok.r !== undefined) second.push(["rank", String(tok.r)]);
  if (second.length) line(...second);

  if (tok.alt && tok.alt.length) {
    const alts = el("div", "tip-alts");
    // Records from an API carry only the top-k it returned: say so where they show.
    alts.appendChild(el("div", "tip-label", tok.altl ? String(tok.altl) : tok.he
      ? "the API's top-" + tok.alt.length + " (no full distribution)" : "top alternatives"));
    tok.alt.slice(0, TIP_ALTERNATIVES).forEach(([text, p], i) => {
      const chosen = tok.ac === i;
      const row = el("div", "tip-alt" + (chosen ? " chosen" : ""));
      row.appendChild(el("span", "alt-mark", chosen ? "\u25b8" : ""));
      row.appendChild(el("span", "alt-text", "\u201c" + visible(text) + "\u201d"));
      row.appendChild(el("span", "alt-p", fmtProb(p)));
      alts.appendChild(row);
    });
    tip.appendChild(alts);
  }
  addOverlayToTip(tip, tok);
  addNotesToTip(tip, notes);
}

// An overlay's lines (e.g. KL and JS) and a second model's top alternatives.
function addOverlayToTip(tip, tok) {
  if (Array.isArray(tok.x)) {
    for (const line of tok.x) tip.appendChild(el("div", "tip-row tip-extra", String(line)));
  }
  if (tok.alt2 && Array.isArray(tok.alt2.a)) {
    const alts = el("div", "tip-alts");
    alts.appendChild(el("div", "tip-label", String(tok.alt2.l || "second model")));
    tok.alt2.a.slice(0, TIP_ALTERNATIVES).forEach(([text, p, chosen]) => {
      const row = el("div", "tip-alt" + (chosen ? " chosen" : ""));
      row.appendChild(el("span", "alt-mark", chosen ? "\u25b8" : ""));
      row.appendChild(el("span", "alt-text", "\u201c" + visible(String(text)) + "\u201d"));
      row.appendChild(el("span", "alt-p", fmtProb(p)));
      alts.appendChild(row);
    });
    tip.appendChild(alts);
  }
}

// The highest a tooltip may go: below Streamlit's fixed app header, if there is one.
function topLimit() {
  const header = document.querySelector('header[data-testid="stHeader"]');
  const bottom = header ? header.getBoundingClientRect().bottom : 0;
  return Math.max(EDGE, bottom + EDGE);
}

// Place the (fixed-position) tooltip above the token, or below it where the viewport
// has no room above, shifted sideways to stay inside the viewport.
function placeTip(tip, span) {
  const rects = span.getClientRects();
  const r = rects.length ? rects[0] : span.getBoundingClientRect();
  tip.style.left = "0px";
  tip.style.top = "0px";
  tip.classList.add("shown");
  const w = tip.offsetWidth;
  const h = tip.offsetHeight;
  const vw = document.documentElement.clientWidth || window.innerWidth;
  const vh = document.documentElement.clientHeight || window.innerHeight;
  const minTop = topLimit();
  const roomAbove = r.top - TIP_GAP - minTop;
  const roomBelow = vh - EDGE - r.bottom - TIP_GAP;
  // Above when it fits; else below when that fits or has more room; clamped on screen.
  const below = h > roomAbove && (h <= roomBelow || roomBelow > roomAbove);
  let top = below ? r.bottom + TIP_GAP : r.top - TIP_GAP - h;
  top = Math.max(minTop, Math.min(top, vh - EDGE - h));
  let left = r.left;
  if (left + w > vw - EDGE) left = vw - EDGE - w;
  if (left < EDGE) left = EDGE;
  tip.style.left = Math.round(left) + "px";
  tip.style.top = Math.round(top) + "px";
  tip.classList.toggle("below", below);
}

function setupRoot(parentElement) {
  const root = parentElement.querySelector(".tv-root");
  const view = root.querySelector(".tv-tokens");
  const tip = root.querySelector(".tok-tip");
  view.querySelectorAll(".tok, .tv-chunk").forEach((node) => node.remove()); // an earlier state's
  const listening = new AbortController();
  const { signal } = listening;
  root.querySelectorAll(".tv-menu, .tv-rangebar, .tv-nav, .tv-sec")
    .forEach((node) => node.remove());
  const state = {
    root, view, tip, tokens: [], spans: [], chunks: [], cutKey: null, eagerMax: EAGER_MAX,
    selected: null, highlight: null, reveal: 0,
    streaming: false, hovered: null, setTriggerValue: null, group: null, seq: 0,
    fresh: true, stop: () => listening.abort(),
    // menu, range and annotations (token_view_menu.js)
    menu: null, bar: null, menuAt: null, range: null, drag: null, swallowClick: false,
    sets: [], lens: false, ann: [], annAt: new Map(), annStarts: new Set(), alerts: new Map(),
    selectionData: "null", sentRange: null,
  };
  createOverlays(state);
  createNav(state);

  const tokenOf = (target) => {
    const span = target && target.closest ? target.closest(".tok") : null;
    return span && view.contains(span) ? span : null;
  };
  const hide = () => {
    tip.classList.remove("shown");
    state.hovered = null;
  };

  view.addEventListener("mouseover", (ev) => {
    const span = tokenOf(ev.target);
    if (!span || span === state.hovered) return;
    const index = Number(span.dataset.index);
    const tok = state.tokens[index];
    if (!tok) return;
    if (state.drag) {
      dragTo(state, index);
      return;
    }
    if (state.menuAt) return; // no tooltips over an open menu
    state.hovered = span;
    buildTip(tip, tok, notesAt(state, index), state.alerts.get(index));
    placeTip(tip, span);
  }, { signal });
  view.addEventListener("mouseout", (ev) => {
    const span = tokenOf(ev.target);
    if (span && !span.contains(ev.relatedTarget)) hide();
  }, { signal });
  let placing = false;
  const onScroll = () => {
    hide();
    if (placing || (!state.menuAt && !state.range && !isLazy(state))) return;
    placing = true;
    requestAnimationFrame(() => {
      placing = false;
      drawVisible(state);
      placeOverlays(state);
    });
  };
  // A long view shown, hidden or resized draws what is then in sight.
  const resized = new ResizeObserver(() => { if (isLazy(state)) drawVisible(state); });
  resized.observe(view);
  signal.addEventListener("abort", () => resized.disconnect());
  // Copying selected tokens copies their text: no "·", "↵" or "∅" markers.
  document.addEventListener("copy", (ev) => {
    const sel = [root.getSelection && root.getSelection(), window.getSelection()]
      .find((s) => s && !s.isCollapsed);
    if (!sel || !ev.clipboardData) return;
    const picked = state.spans.filter((span) => sel.containsNode(span, true));
    if (!picked.length) return;
    const text = picked.map((span) => state.tokens[Number(span.dataset.index)].t).join("");
    ev.clipboardData.setData("text/plain", text);
    ev.preventDefault();
  }, { signal });
  view.addEventListener("scroll", onScroll, { passive: true, signal });
  window.addEventListener("scroll", onScroll, { passive: true, capture: true, signal });
  window.addEventListener("resize", onScroll, { passive: true, signal });

  // Drag over tokens selects a range; a press and release on one token is a click.
  view.addEventListener("mousedown", (ev) => {
    const span = tokenOf(ev.target);
    if (!span || ev.button !== 0 || state.streaming) return;
    ev.preventDefault(); // no text selection while dragging (an inert view keeps it)
    const index = Number(span.dataset.index);
    state.drag = { anchor: index, current: index, before: state.range };
  }, { signal });
  window.addEventListener("mouseup", () => {
    const drag = state.drag;
    state.drag = null;
    if (!drag || drag.current === drag.anchor) {
      if (drag && state.range !== drag.before) setRange(state, drag.before);
      return;
    }
    const start = Math.min(drag.anchor, drag.current);
    const end = Math.max(drag.anchor, drag.current);
    setRange(state, [start, end]);
    state.swallowClick = true; // a click may follow on a common ancestor
    setTimeout(() => { state.swallowClick = false; }, 0);
    state.sentRange = JSON.stringify([start, end]);
    send(state, "select_range", start, { end_index: end, end_pos: state.tokens[end].pos });
  }, { capture: true, signal });

  view.addEventListener("click", (ev) => {
    const span = tokenOf(ev.target);
    if (!span || state.streaming || state.swallowClick) return;
    const index = Number(span.dataset.index);
    if (!state.tokens[index]) return;
    select(state, index);
    hide();
    if (state.range) setRange(state, null);
    openMenu(state, index);
    send(state, "click", index, {});
  }, { signal });

  // The menu closes on Escape and on a press anywhere outside it.
  document.addEventListener("mousedown", (ev) => {
    if (state.menuAt && !ev.composedPath().includes(state.menu)) closeMenu(state);
  }, { capture: true, signal });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") escape(state);
  }, { signal });

  STATES.set(parentElement, state);
  return state;
}

// Send one event to Python: `kind` at token `index`, with its position to detect staleness.
function send(state, kind, index, fields) {
  const tok = state.tokens[index];
  state.setTriggerValue("event", Object.assign({ kind, index, pos: tok.pos }, fields));
}

// Follow a drag to token `index`: the range shown is the anchor..index.
function dragTo(state, index) {
  const drag = state.drag;
  if (index === drag.current) return;
  drag.current = index;
  state.tip.classList.remove("shown");
  state.hovered = null;
  state.range = index === drag.anchor ? null
    : [Math.min(drag.anchor, index), Math.max(drag.anchor, index)];
  paintRange(state);
  state.bar.hidden = true;
}

function select(state, index) {
  if (state.selected !== null && state.spans[state.selected]) {
    state.spans[state.selected].classList.remove("selected");
  }
  state.selected = index;
  if (index !== null && state.spans[index]) state.spans[index].classList.add("selected");
}

function scrollToToken(view, span) {
  const top = span.offsetTop;
  const bottom = top + span.offsetHeight;
  if (top < view.scrollTop || bottom > view.scrollTop + view.clientHeight) {
    view.scrollTop = Math.max(0, top - view.clientHeight / 3);
  }
  // The page too: a token jumped to from elsewhere (annotations list) may be off screen.
  const r = span.getBoundingClientRect();
  if (r.top < 0 || r.bottom > window.innerHeight) span.scrollIntoView({block: "center"});
}

function leaveGroup(state) {
  const members = state.group === null ? null : GROUPS.get(state.group);
  if (members) {
    members.delete(state);
    if (!members.size) GROUPS.delete(state.group);
  }
  state.group = null;
}

// Show only the newest drawn instance of the group; a new one starts where the view
// it replaces was scrolled to (at the bottom, following the stream, by default).
function showNewest(state, data) {
  const group = typeof data.group === "string" ? data.group : null;
  if (group !== state.group) {
    leaveGroup(state);
    state.group = group;
    if (group !== null) {
      if (!GROUPS.has(group)) GROUPS.set(group, new Set());
      GROUPS.get(group).add(state);
    }
  }
  state.seq = Number.isFinite(data.seq) ? data.seq : 0;
  if (group === null) return;
  const members = GROUPS.get(group);
  let newest = state;
  let previous = null;
  for (const other of members) {
    if (other === state) continue;
    if (other.seq > newest.seq) newest = other;
    else if (!other.root.classList.contains("superseded")) previous = other;
  }
  if (newest === state && previous && state.fresh) {
    const v = previous.view;
    const followed = v.scrollTop + v.clientHeight >= v.scrollHeight - 4;
    state.view.scrollTop = followed ? state.view.scrollHeight : v.scrollTop;
  }
  for (const other of members) other.root.classList.toggle("superseded", other !== newest);
}

// A long view's tokens come as columns (token_view.py `token_columns`): one array a
// field, null where a token has none.
function fromColumns(cols) {
  const fields = cols && typeof cols === "object"
    ? Object.keys(cols).filter((k) => Array.isArray(cols[k])) : [];
  const n = fields.length ? cols[fields[0]].length : 0;
  const tokens = new Array(n);
  for (let i = 0; i < n; i++) {
    const tok = {};
    for (const k of fields) {
      const value = cols[k][i];
      if (value !== null && value !== undefined) tok[k] = value;
    }
    tokens[i] = tok;
  }
  return tokens;
}

function render(state, data) {
  const { view } = state;
  const tokens = data.cols ? fromColumns(data.cols) : data.tokens || [];
  const atBottom = state.fresh
    || view.scrollTop + view.clientHeight >= view.scrollHeight - 4;

  // Keep the spans of the common prefix (streaming appends), rebuild the rest.
  let keep = 0;
  const old = state.tokens;
  while (keep < old.length && keep < tokens.length && sameToken(old[keep], tokens[keep])) keep++;
  state.tokens = tokens;
  if (Number.isInteger(data.eager_max)) state.eagerMax = data.eager_max;
  applyFullAlternatives(state, data.full);
  rechunk(state, tokens, keep, sectionCuts(data.sec, tokens.length));
  if (state.hovered && !view.contains(state.hovered)) {
    state.tip.classList.remove("shown");
    state.hovered = null;
  }

  state.root.classList.add("ready"); // drawn: may show (before measuring for scrolls)
  state.streaming = Boolean(data.streaming);
  state.inert = Boolean(data.inert); // shown as a finished view, but takes no clicks
  state.sets = Array.isArray(data.sets) ? data.sets : [];
  state.lens = Boolean(data.lens);
  applyAnnotations(state, data.ann);
  applyAlerts(state, data.alerts);
  updateRange(state, data);
  updateNav(state, data);
  drawVisible(state);
  state.root.classList.toggle("streaming", state.streaming && !state.inert);
  state.root.classList.toggle("empty", tokens.length === 0);
  if (state.selected !== null && state.selected >= tokens.length) state.selected = null;
  select(state, state.selected);

  const highlight = Number.isInteger(data.highlight) ? data.highlight : null;
  if (state.highlight !== null && state.spans[state.highlight]) {
    state.spans[state.highlight].classList.remove("highlight");
  }
  // A jump asked for again (the same token, from a list elsewhere) scrolls to it again.
  const reveal = Number.isInteger(data.reveal) ? data.reveal : 0;
  const moved = highlight !== state.highlight || reveal !== state.reveal;
  state.highlight = highlight;
  state.reveal = reveal;
  const lit = highlight !== null ? spanAt(state, highlight) : null;
  if (lit) {
    const span = lit;
    span.classList.add("highlight");
    if (moved) scrollToToken(view, span);
  } else if (state.streaming && atBottom) {
    view.scrollTop = view.scrollHeight;
    if (isLazy(state)) {  // the chunks now in sight drawn at their true heights: again
      drawVisible(state);
      view.scrollTop = view.scrollHeight;
    }
  }
  showNewest(state, data);
  state.fresh = false;
  placeOverlays(state);
}

// A long view's tokens carry the tooltip's alternatives only; the token clicked last comes
// with its whole list (`full`: [index, alternatives, chosen]), for the menu's inject panel.
function applyFullAlternatives(state, full) {
  if (!Array.isArray(full) || !Array.isArray(full[1])) return;
  const [index, alt, ac] = full;
  const tok = state.tokens[index];
  if (!tok) return;
  state.tokens[index] = Object.assign({}, tok, { alt, ac: Number.isInteger(ac) ? ac : undefined });
  if (!state.menuAt || state.menuAt.index !== index) return;
  state.menuAt.tok = state.tokens[index];
  const panel = state.menu.querySelector('.menu-panel[data-panel="inject"]');
  if (!panel || !panel.childElementCount) return; // built with the full list when opened
  panel.replaceChildren();
  if (!panel.hidden) buildInject(state, panel, state.menuAt.tok);
}

// Mark the alert tokens (a warning sign over them); reasons go into the tooltip.
function applyAlerts(state, alerts) {
  state.alerts = new Map();
  if (Array.isArray(alerts)) {
    for (const [index, reason] of alerts) {
      if (Number.isInteger(index)) state.alerts.set(index, String(reason));
    }
  }
  state.spans.forEach((span, i) => span.classList.toggle("alert", state.alerts.has(i)));
}

// Python's `selection` wins when it changes; otherwise the view keeps its own range
// (redrawn on spans that were rebuilt). The menu stays open on its token if unchanged.
function updateRange(state, data) {
  const n = state.tokens.length;
  if (state.streaming) {
    state.drag = null;
    if (state.menuAt) closeMenu(state);
  }
  if (state.menuAt) {
    const tok = state.tokens[state.menuAt.index];
    if (!tok || !sameToken(tok, state.menuAt.tok)) closeMenu(state);
  }
  const selection = Array.isArray(data.selection) && data.selection.length === 2
    && data.selection.every((i) => Number.isInteger(i) && i >= 0 && i < n)
    ? [Math.min(...data.selection), Math.max(...data.selection)] : null;
  const key = JSON.stringify(selection);
  if (key !== state.selectionData) {
    state.selectionData = key;
    // Python echoing the view's own range (a caller that keeps it from the returned
    // event passes it one rerun late, maybe after a click dropped it) changes nothing.
    const echo = key === state.sentRange;
    state.sentRange = null;
    if (key !== JSON.stringify(state.range) && !echo) {
      setRange(state, selection);
      return;
    }
  }
  if (state.range && state.range[1] >= n) state.range = null;
  paintRange(state);
  if (state.range && state.bar.hidden && !state.streaming) showBar(state, false);
  if (!state.range || state.streaming) state.bar.hidden = true;
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const state = STATES.get(parentElement) || setupRoot(parentElement);
  state.setTriggerValue = setTriggerValue;
  render(state, data || {});
  // Streamlit may call a superseded call's cleanup while the view stays mounted (data
  // changed before the module had loaded): the next call then sets the view up afresh.
  return () => {
    if (STATES.get(parentElement) !== state) return;
    state.stop();
    leaveGroup(state);
    STATES.delete(parentElement);
  };
}
