// The token view's way through a long trace (concatenated before token_view.js):
// a bar above the tokens to jump to the next / previous token under the low threshold
// or above an entropy level, and to find text; and a header before each reasoning
// section (`data.sec`: [start, end, header]) that folds it to one line.
//
// Everything happens here in the browser: a jump or a fold reruns no Python.

const NAV_MIN_TOKENS = 100; // shorter views are read at a glance: no bar
const DEFAULT_ENTROPY = 2.0; // nats

function createNav(state) {
  const nav = el("div", "tv-nav");
  nav.hidden = true;
  for (const type of ["keydown", "keyup", "keypress"]) {
    nav.addEventListener(type, (ev) => ev.stopPropagation()); // not Streamlit's shortcuts
  }
  const group = (label) => {
    const box = el("span", "nav-group");
    if (label) box.appendChild(label);
    nav.appendChild(box);
    return box;
  };
  const arrows = (box, name, step) => {
    for (const [mark, dir, word] of [["\u25c0", -1, "previous "], ["\u25b6", 1, "next "]]) {
      const arrow = button("nav-btn", mark, () => step(dir));
      arrow.setAttribute("aria-label", word + name);
      box.appendChild(arrow);
    }
  };

  const low = group(el("span", "nav-label"));
  arrows(low, "low-probability token", (dir) => jump(state, dir, (i) => isLow(state, i)));

  const high = group(el("span", "nav-label", "H >"));
  const level = el("input", "nav-level");
  level.type = "number";
  level.step = "0.5";
  level.min = "0";
  level.value = String(DEFAULT_ENTROPY);
  level.setAttribute("aria-label", "entropy level in nats");
  high.appendChild(level);
  high.appendChild(el("span", "nav-label", "nats"));
  arrows(high, "high-entropy token", (dir) => {
    const h = Number(level.value);
    jump(state, dir, (i) => Number.isFinite(h) && state.tokens[i].h > h);
  });

  const find = group(null);
  const query = field("input", "nav-find", "Find in the text");
  query.setAttribute("aria-label", "find in the text");
  find.appendChild(query);
  arrows(find, "match", (dir) => jump(state, dir, (i) => state.found.starts.has(i)));
  const found = el("span", "nav-count");
  find.appendChild(found);
  query.addEventListener("input", () => {
    state.query = query.value;
    markFound(state);
  });
  query.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") jump(state, ev.shiftKey ? -1 : 1, (i) => state.found.starts.has(i));
  });

  const folds = group(null);
  folds.appendChild(button("nav-btn nav-wide", "Fold reasoning", () => foldAll(state, true)));
  folds.appendChild(button("nav-btn nav-wide", "Unfold", () => foldAll(state, false)));

  // The map: the whole trace as a strip beside the text (p left, entropy right); a click
  // jumps to the tokens at that height.
  const earlier = state.view.parentElement; // the body of a view set up before on this root
  if (earlier !== state.root) {
    state.root.insertBefore(state.view, earlier);
    earlier.remove();
  }
  const body = el("div", "tv-body");
  state.root.insertBefore(body, state.view);
  body.appendChild(state.view);
  const map = el("canvas", "tv-map");
  map.hidden = true;
  map.setAttribute("aria-label", "map of the whole text: click to jump");
  map.title = "The whole text, top to bottom: p (left, coloured as the tokens) and "
    + "entropy (right, darker is higher). Click to jump there.";
  body.appendChild(map);
  map.addEventListener("click", (ev) => {
    const n = state.tokens.length;
    const box = map.getBoundingClientRect();
    const index = Math.min(n - 1, Math.floor(((ev.clientY - box.top) / box.height) * n));
    if (index >= 0) jump(state, 1, (i) => i === index, index - 1);
  });

  Object.assign(state, {
    nav, map, body, navAt: null, query: "", found: { starts: new Set(), tokens: new Set(), n: 0 },
    navParts: { low: low.querySelector(".nav-label"), found, folds },
    sections: [], folded: new Set(), headers: [],
  });
  state.root.insertBefore(nav, body);
}

function isLow(state, i) {
  const tok = state.tokens[i];
  return tok.p !== null && tok.p !== undefined && tok.p < state.uncertain;
}

// Jump to the nearest token after (dir 1) or before (dir -1) the last one jumped to
// that `matches`; a token inside a folded section unfolds it.
function jump(state, dir, matches, start = null) {
  const n = state.tokens.length;
  const here = start !== null ? start : state.navAt;
  const from = here === null ? (dir > 0 ? -1 : n) : here;
  for (let i = from + dir; i >= 0 && i < n; i += dir) {
    if (!matches(i)) continue;
    const section = state.sections.find(([a, b]) => a <= i && i < b);
    if (section && state.folded.has(section[0])) fold(state, section[0], false);
    if (state.navAt !== null && state.spans[state.navAt]) {
      state.spans[state.navAt].classList.remove("navhit");
    }
    state.navAt = i;
    const span = spanAt(state, i);
    span.classList.add("navhit");
    scrollToToken(state.view, span);
    return;
  }
  state.nav.classList.add("nav-none"); // nothing further that way: a short flash
  setTimeout(() => state.nav.classList.remove("nav-none"), 400);
}

// Mark the tokens of every (case-insensitive) match of the query in the joined text.
function markFound(state) {
  for (const i of state.found.tokens) {
    if (state.spans[i]) state.spans[i].classList.remove("found");
  }
  state.found = { starts: new Set(), tokens: new Set(), n: 0 };
  const q = state.query.toLowerCase();
  if (q) {
    const starts = [];
    let text = "";
    for (const tok of state.tokens) {
      starts.push(text.length);
      text += tok.t;
    }
    const lower = text.toLowerCase();
    let tokenAt = 0;
    for (let at = lower.indexOf(q); at >= 0; at = lower.indexOf(q, at + q.length)) {
      while (tokenAt + 1 < starts.length && starts[tokenAt + 1] <= at) tokenAt++;
      state.found.starts.add(tokenAt);
      state.found.n++;
      for (let i = tokenAt; i < starts.length && starts[i] < at + q.length; i++) {
        state.found.tokens.add(i);
      }
    }
  }
  for (const i of state.found.tokens) if (state.spans[i]) state.spans[i].classList.add("found");
  const n = state.found.n;
  state.navParts.found.textContent = q ? n + (n === 1 ? " match" : " matches") : "";
}

function fold(state, start, folded) {
  const section = state.sections.find(([a]) => a === start);
  if (!section) return;
  if (folded) state.folded.add(start);
  else state.folded.delete(start);
  for (let i = section[0]; i < section[1] && i < state.spans.length; i++) {
    if (state.spans[i]) state.spans[i].classList.toggle("folded", folded);
  }
  for (const chunk of state.chunks) {
    if (chunk.start >= section[0] && chunk.end <= section[1]) {
      chunk.node.classList.toggle("folded", folded);
    }
  }
  if (!folded) drawVisible(state);
  const header = state.headers.find((h) => h.start === start);
  if (header) header.node.firstChild.textContent = folded ? "\u25b6 " : "\u25bc ";
}

function foldAll(state, folded) {
  for (const [start] of state.sections) fold(state, start, folded);
}

// Headers before the reasoning sections, drawn again after each render (spans may be new).
function applySections(state, sections) {
  for (const header of state.headers) header.node.remove();
  state.headers = [];
  const n = state.tokens.length;
  state.sections = (Array.isArray(sections) ? sections : []).filter(
    (s) => Array.isArray(s) && Number.isInteger(s[0]) && Number.isInteger(s[1])
      && s[0] >= 0 && s[0] < s[1] && s[1] <= n);
  const starts = new Set(state.sections.map(([a]) => a));
  for (const start of [...state.folded]) if (!starts.has(start)) state.folded.delete(start);
  for (const [start, , label] of state.sections) {
    const node = el("div", "tv-sec");
    node.appendChild(el("span", "sec-mark", "\u25bc "));
    node.title = "Click to fold or unfold this block";
    node.appendChild(el("span", "sec-label", String(label)));
    node.addEventListener("click", (ev) => {
      ev.stopPropagation();
      fold(state, start, !state.folded.has(start));
    });
    state.view.insertBefore(node, chunkOf(state, start).node);
    state.headers.push({ start, node });
    fold(state, start, state.folded.has(start));
  }
}

function updateNav(state, data) {
  state.uncertain = Number(data.uncertain);
  applySections(state, data.sec);
  const n = state.tokens.length;
  if (state.navAt !== null && state.navAt >= n) state.navAt = null;
  if (state.navAt !== null && state.spans[state.navAt]) {
    state.spans[state.navAt].classList.add("navhit");
  }
  state.nav.hidden = state.streaming || (n < NAV_MIN_TOKENS && !state.sections.length);
  state.map.hidden = state.streaming || n < NAV_MIN_TOKENS;
  state.body.classList.toggle("mapped", !state.map.hidden);
  if (!state.map.hidden) drawMap(state);
  if (state.nav.hidden) return;
  let lows = 0;
  for (let i = 0; i < n; i++) if (isLow(state, i)) lows++;
  state.navParts.low.textContent = "p < " + state.uncertain + " (" + lows + ")";
  state.navParts.folds.hidden = !state.sections.length;
  markFound(state);
}

const MAP_COLOURS = { hi: "#4fc97a", mid: "#f5b82e", lo: "#f05a5a", none: "#c8c8c8" };
const MAP_RANK = { hi: 0, none: 1, mid: 2, lo: 3 };

// One pixel row per slice of tokens: the slice's least confident class, and its highest
// entropy (darker is higher, scaled to the trace's highest). CSS stretches the rows to
// the view's height.
const MAP_ROWS = 480;

function drawMap(state) {
  const { map, tokens } = state;
  map.width = 2;
  map.height = MAP_ROWS;
  const ctx = map.getContext("2d");
  const n = tokens.length;
  let top = 0;
  for (const tok of tokens) if (tok.h > top) top = tok.h;
  for (let y = 0; y < MAP_ROWS; y++) {
    const a = Math.floor((y * n) / MAP_ROWS);
    const b = Math.max(a + 1, Math.floor(((y + 1) * n) / MAP_ROWS));
    let worst = "hi";
    let h = 0;
    for (let i = a; i < b && i < n; i++) {
      if (MAP_RANK[tokens[i].c] > MAP_RANK[worst]) worst = tokens[i].c;
      if (tokens[i].h > h) h = tokens[i].h;
    }
    ctx.fillStyle = MAP_COLOURS[worst] || MAP_COLOURS.none;
    ctx.fillRect(0, y, 1, 1);
    const shade = top > 0 ? Math.round(235 - (h / top) * 200) : 235;
    ctx.fillStyle = `rgb(${shade}, ${shade}, ${shade})`;
    ctx.fillRect(1, y, 1, 1);
  }
}
