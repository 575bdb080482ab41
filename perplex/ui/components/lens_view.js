// The logit-lens view: one cell per position (input token, the chosen layer's top-1
// prediction, a rank stripe with one segment per layer), a layer slider that updates the
// predictions in place (no Python rerun), a top-3 tooltip, click -> trigger "click".
// A cell's predictions over all layers are laid out once, as a column of lines behind a
// one-line window; the slider only moves columns (see showLayer).
//
// Every text (tokens, candidates) is untrusted: textContent / createTextNode only.
// Timings of slider updates (input event -> text updated and laid out) are kept in
// window.__perplexLensTimings for the browser test.

const STATES = new WeakMap();
const LINE_PX = 22; // height of one prediction line (lens_view.css: .lv-pred, .lv-l)
const SHIFTS = [];

// The transform that brings line `k` of a column into its cell's window (strings cached).
function shift(k) {
  while (SHIFTS.length <= k) SHIFTS.push(`translateY(${-SHIFTS.length * LINE_PX}px)`);
  return SHIFTS[k];
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function visible(text) {
  if (text === "") return "\u2205";
  return text.replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

// Rank of the final prediction -> colour: rank 1 blue, rank >= 1000 yellow (log scale).
function rankColour(rank) {
  const x = Math.min(1, Math.log10(Math.max(1, rank)) / 3);
  const blue = [37, 99, 235];
  const yellow = [250, 204, 21];
  const c = blue.map((b, i) => Math.round(b + (yellow[i] - b) * x));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

// A probability in a few characters that never reads as 0 when it is not (2.3e-7), as
// the token view and the tables write it (core.plots.short_prob). The lens computes in
// float32, whose smallest positive value is 1.4e-45: a 0 there is a probability under it.
function shortProb(p) {
  if (p === 0) return "< 1e-45";
  return p >= 0.001 ? p.toFixed(3) : p.toExponential(1);
}

function layerName(layer, n) {
  if (layer === 0) return "embedding";
  return layer === n - 1 ? `${layer} (output)` : String(layer);
}

function setup(parentElement) {
  const root = parentElement.querySelector(".lv-root");
  const state = {
    root, bar: root.querySelector(".lv-bar"), view: root.querySelector(".lv-tokens"),
    tip: root.querySelector(".lv-tip"), data: null, sig: null, layer: null, cells: [],
    columns: [], lineOf: [], at: null, near: null, selected: null, setTriggerValue: null,
  };
  // Cells near the token box's visible area (half its height either side); scrubbing moves
  // only these, and a cell coming near catches up here, before it scrolls into view.
  state.observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const i = Number(entry.target.dataset.index);
      state.near[i] = entry.isIntersecting ? 1 : 0;
      if (entry.isIntersecting && state.layer !== null) moveColumn(state, i, state.layer);
    }
  }, { root: state.view, rootMargin: "50% 0px" });
  const slider = el("input", "lv-slider");
  slider.type = "range";
  slider.min = "0";
  slider.step = "1";
  slider.setAttribute("aria-label", "layer");
  const label = el("span", "lv-label");
  const legend = el("span", "lv-legend");
  legend.appendChild(el("span", "lv-same", "same as output"));
  legend.appendChild(el("span", "lv-diff", "differs"));
  legend.appendChild(el("span", "lv-key", "stripe: rank of the output's token per layer"));
  const grad = el("span", "lv-grad");
  legend.appendChild(grad);
  legend.appendChild(el("span", "lv-key", "1 \u2192 \u22651000 \u00b7 \u258e lock-in"));
  state.bar.append(el("span", "lv-title", "layer"), slider, label, legend);
  state.slider = slider;
  state.label = label;
  slider.addEventListener("input", (ev) => {
    const t0 = ev.timeStamp || performance.now();
    const t1 = performance.now();
    showLayer(state, Number(slider.value));
    const t2 = performance.now();
    void state.view.offsetHeight; // include layout in the measurement
    const t3 = performance.now();
    (window.__perplexLensTimings = window.__perplexLensTimings || []).push(t3 - t0);
    // Where the time goes: waiting for the handler, updating the DOM, layout.
    (window.__perplexLensParts = window.__perplexLensParts || []).push(
      [t1 - t0, t2 - t1, t3 - t2]);
  });

  const cellOf = (target) => {
    const cell = target && target.closest ? target.closest(".lv-cell") : null;
    return cell && state.view.contains(cell) ? cell : null;
  };
  state.view.addEventListener("mouseover", (ev) => {
    const cell = cellOf(ev.target);
    if (!cell || cell === state.hovered) return;
    state.hovered = cell;
    buildTip(state, Number(cell.dataset.index));
    placeTip(state.tip, cell);
  });
  state.view.addEventListener("mouseout", (ev) => {
    const cell = cellOf(ev.target);
    if (cell && !cell.contains(ev.relatedTarget)) {
      state.tip.classList.remove("shown");
      state.hovered = null;
    }
  });
  state.view.addEventListener("click", (ev) => {
    const cell = cellOf(ev.target);
    if (!cell) return;
    const index = Number(cell.dataset.index);
    select(state, index);
    state.setTriggerValue("click", { pos: state.data.tokens[index].pos });
  });
  STATES.set(parentElement, state);
  return state;
}

function select(state, index) {
  if (state.selected !== null && state.cells[state.selected]) {
    state.cells[state.selected].classList.remove("selected");
  }
  state.selected = index;
  if (index !== null && state.cells[index]) state.cells[index].classList.add("selected");
}

function build(state, data) {
  state.data = data;
  state.sig = data.sig;
  const n = data.layers;
  const frag = document.createDocumentFragment();
  state.cells = [];
  state.columns = [];
  state.lineOf = [];
  state.shown = data.cand.map(visible);
  data.tokens.forEach((tok, i) => {
    const cell = el("span", "lv-cell");
    cell.dataset.index = String(i);
    // A fixed width (the widest prediction over all layers, in a monospace font) and size
    // containment keep a text change from re-laying out the other cells.
    let widest = Math.min(visible(tok.t).length, 16);
    for (let l = 0; l < n; l++) widest = Math.max(widest, state.shown[data.top1[l][i]].length);
    cell.style.width = `calc(${Math.min(widest, 16) + 0.5}ch + 4px)`;
    cell.appendChild(el("span", "lv-in", visible(tok.t)));
    // Each distinct prediction (consecutive layers that agree share one) is laid out once,
    // as a line of a column; the cell shows one line through a one-line window. Scrubbing
    // only moves columns whose line changes (a transform: no layout, no re-shaped text,
    // one style recalculation per moved cell). Line colours (same as output or not) are
    // fixed per line.
    const pred = el("span", "lv-pred");
    const column = el("span", "lv-col");
    const lineOf = new Int16Array(n);
    let line = -1;
    for (let l = 0; l < n; l++) {
      const c = data.top1[l][i];
      if (l === 0 || c !== data.top1[l - 1][i]) {
        const text = el("span", c === data.top1[n - 1][i] ? "lv-l same" : "lv-l diff",
          state.shown[c]);
        text.setAttribute("aria-hidden", "true");
        column.appendChild(text);
        line += 1;
      }
      lineOf[l] = line;
    }
    pred.appendChild(column);
    cell.appendChild(pred);
    // One element per stripe: a gradient with one hard-edged band per layer (a span per
    // layer would be 9,300 nodes at 300 tokens, and scrubbing would lay them all out).
    const stripe = el("span", "lv-stripe");
    const bands = [];
    for (let l = 0; l < n; l++) {
      const a = (100 * l / n).toFixed(3);
      const b = (100 * (l + 1) / n).toFixed(3);
      const colour = rankColour(tok.rank[l]);
      if (l === tok.lock) bands.push(`#111 ${a}%`, `#111 calc(${a}% + 2px)`,
        `${colour} calc(${a}% + 2px)`, `${colour} ${b}%`);
      else bands.push(`${colour} ${a}%`, `${colour} ${b}%`);
    }
    stripe.style.background = `linear-gradient(to right, ${bands.join(", ")})`;
    cell.appendChild(stripe);
    frag.appendChild(cell);
    state.cells.push(cell);
    state.columns.push(column);
    state.lineOf.push(lineOf);
  });
  state.at = new Int16Array(data.tokens.length).fill(-1);
  state.near = new Uint8Array(data.tokens.length);
  state.observer.disconnect();
  state.view.replaceChildren(frag);
  state.cells.forEach((cell) => state.observer.observe(cell));
  state.root.style.setProperty("--lv-layers", String(n));
  state.slider.max = String(n - 1);
  const layer = state.layer === null || state.layer > n - 1 ? n - 1 : state.layer;
  state.layer = null;
  state.slider.value = String(layer);
  showLayer(state, layer, true);
}

// The hot path: move the columns of the cells near view (`all`: of every cell) whose
// shown line differs at `layer`. Nothing is read from the layout, so the browser lays out
// and paints once, afterwards.
function showLayer(state, layer, all = false) {
  const { data, near } = state;
  for (let i = 0; i < near.length; i++) {
    if (all || near[i]) moveColumn(state, i, layer);
  }
  state.layer = layer;
  state.label.textContent = `${layerName(layer, data.layers)} of ${data.layers - 1}`;
  if (state.hovered) buildTip(state, Number(state.hovered.dataset.index));
}

// Show line lineOf[i][layer] of cell i; the other lines are hidden from screen readers.
function moveColumn(state, i, layer) {
  const line = state.lineOf[i][layer];
  const was = state.at[i];
  if (was === line) return;
  const column = state.columns[i];
  column.style.transform = shift(line);
  if (was >= 0) column.children[was].setAttribute("aria-hidden", "true");
  column.children[line].removeAttribute("aria-hidden");
  state.at[i] = line;
}

function buildTip(state, index) {
  const { tip, data } = state;
  const tok = data.tokens[index];
  const layer = state.layer;
  tip.replaceChildren();
  const head = el("div", "tip-head");
  head.appendChild(el("span", "tip-label", "after "));
  head.appendChild(el("span", "tip-text", "\u201c" + visible(tok.t) + "\u201d"));
  head.appendChild(el("span", "tip-label", ` \u00b7 layer ${layerName(layer, data.layers)}`));
  tip.appendChild(head);
  tok.top[layer].forEach(([c, p]) => {
    const row = el("div", "tip-alt" + (c === data.top1[data.layers - 1][index] ? " final" : ""));
    row.appendChild(el("span", "alt-text", "\u201c" + visible(data.cand[c]) + "\u201d"));
    row.appendChild(el("span", "alt-p", shortProb(p)));
    tip.appendChild(row);
  });
  const output = data.cand[data.top1[data.layers - 1][index]];
  tip.appendChild(el("div", "tip-row",
    `output \u201c${visible(output)}\u201d here: p = ${shortProb(tok.p[layer])}, ` +
    `rank ${tok.rank[layer]}`));
  tip.appendChild(el("div", "tip-row", `locks in at layer ${tok.lock}`));
}

function placeTip(tip, cell) {
  const r = cell.getBoundingClientRect();
  tip.classList.add("shown");
  const w = tip.offsetWidth;
  const h = tip.offsetHeight;
  const vw = document.documentElement.clientWidth || window.innerWidth;
  let top = r.top - 6 - h;
  if (top < 60) top = r.bottom + 6;
  let left = Math.min(r.left, vw - 4 - w);
  left = Math.max(4, left);
  tip.style.left = Math.round(left) + "px";
  tip.style.top = Math.round(top) + "px";
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const state = STATES.get(parentElement) || setup(parentElement);
  state.setTriggerValue = setTriggerValue;
  if (!data || !data.tokens) return undefined;
  if (data.sig !== state.sig) build(state, data);
  const selected = data.selected;
  const index = Number.isInteger(selected)
    ? data.tokens.findIndex((t) => t.pos === selected) : -1;
  select(state, index >= 0 ? index : null);
  return () => {
    if (STATES.get(parentElement) === state) STATES.delete(parentElement);
    state.observer.disconnect();
  };
}
