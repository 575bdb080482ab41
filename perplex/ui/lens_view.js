// The logit-lens view: one cell per position (input token, the chosen layer's top-1
// prediction, a rank stripe with one segment per layer), a layer slider that updates the
// predictions in place (no Python rerun), a top-3 tooltip, click -> trigger "click".
//
// Every text (tokens, candidates) is untrusted: textContent / createTextNode only.
// Timings of slider updates (input event -> text updated and laid out) are kept in
// window.__perplexLensTimings for the browser test.

const STATES = new WeakMap();

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

function layerName(layer, n) {
  if (layer === 0) return "embedding";
  return layer === n - 1 ? `${layer} (output)` : String(layer);
}

function setup(parentElement) {
  const root = parentElement.querySelector(".lv-root");
  const state = {
    root, bar: root.querySelector(".lv-bar"), view: root.querySelector(".lv-tokens"),
    tip: root.querySelector(".lv-tip"), data: null, sig: null, layer: null, cells: [],
    preds: [], selected: null, setTriggerValue: null,
  };
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
  state.preds = [];
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
    // Every layer's prediction is laid out once, stacked; scrubbing only flips which one is
    // visible (`visibility` needs a repaint, not a layout: re-shaping 300 changed texts per
    // move was the cost). Same-as-output or not is fixed per layer, so its class is static.
    const pred = el("span", "lv-pred");
    const layers = [];
    for (let l = 0; l < n; l++) {
      const c = data.top1[l][i];
      const span = el("span", c === data.top1[n - 1][i] ? "lv-l same" : "lv-l diff",
        state.shown[c]);
      pred.appendChild(span);
      layers.push(span);
    }
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
    state.preds.push(layers);
  });
  state.view.replaceChildren(frag);
  state.root.style.setProperty("--lv-layers", String(n));
  state.slider.max = String(n - 1);
  const layer = state.layer === null || state.layer > n - 1 ? n - 1 : state.layer;
  state.layer = null;
  state.slider.value = String(layer);
  showLayer(state, layer);
}

// The hot path: two class flips per position (the old layer's text hidden, the new shown).
function showLayer(state, layer) {
  const { data, preds } = state;
  const old = state.layer;
  for (let i = 0; i < preds.length; i++) {
    if (old !== null && old !== layer) preds[i][old].classList.remove("on");
    preds[i][layer].classList.add("on");
  }
  state.layer = layer;
  state.label.textContent = `${layerName(layer, data.layers)} of ${data.layers - 1}`;
  if (state.hovered) buildTip(state, Number(state.hovered.dataset.index));
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
    row.appendChild(el("span", "alt-p", String(p)));
    tip.appendChild(row);
  });
  const output = data.cand[data.top1[data.layers - 1][index]];
  tip.appendChild(el("div", "tip-row",
    `output \u201c${visible(output)}\u201d here: p = ${tok.p[layer]}, rank ${tok.rank[layer]}`));
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
  };
}
