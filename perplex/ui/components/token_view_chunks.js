// The token view's tokens live in chunks (concatenated before token_view.js), so that a
// long trace keeps only what is near the screen in the DOM.
//
// A chunk is a run of about CHUNK tokens: it ends after a line break once it has CHUNK
// tokens, at CHUNK_MAX tokens in any case, and at every reasoning section's start and end
// (so a section folds as whole chunks and its header sits between two chunks). A drawn
// chunk is an inline <span class="tv-chunk"> holding one span per token, so the text
// flows across chunks as if they were not there. A chunk far from the visible part of
// the scroll box is a "pending" block of its measured (or, never drawn, estimated)
// height, with no token spans: the box's scroll height stays about the real one.
//
// Views up to state.eagerMax tokens draw every chunk at once (a browser's own find then
// sees every token); longer ones draw the chunks within MARGIN box heights of the
// visible part, and drop those beyond twice that, on each scroll frame.

const CHUNK = 128; // tokens in a chunk, at least, unless a section starts or ends sooner
const CHUNK_MAX = 512; // a chunk with no line break in sight ends here anyway
const EAGER_MAX = 2000; // views this long or shorter draw every chunk
const MARGIN = 1.5; // box heights drawn above and below the visible part

function chunkOf(state, index) {
  const { chunks } = state;
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (chunks[mid].end <= index) lo = mid + 1;
    else if (chunks[mid].start > index) hi = mid - 1;
    else return chunks[mid];
  }
  return null;
}

// Cut tokens [from, n) into chunks; `cuts` are the indices where a chunk must begin.
function cutChunks(tokens, from, cuts) {
  const out = [];
  let start = from;
  let chars = 0;
  let lines = 0;
  for (let i = from; i < tokens.length; i++) {
    if (i > start && cuts.has(i)) {
      out.push({ start, end: i, chars, lines });
      start = i;
      chars = 0;
      lines = 0;
    }
    const text = tokens[i].t;
    chars += text.length + 1;
    if (text.indexOf("\n") >= 0) lines += text.split("\n").length - 1;
    const size = i + 1 - start;
    if ((size >= CHUNK && text.indexOf("\n") >= 0) || size >= CHUNK_MAX) {
      out.push({ start, end: i + 1, chars, lines });
      start = i + 1;
      chars = 0;
      lines = 0;
    }
  }
  if (start < tokens.length) out.push({ start, end: tokens.length, chars, lines });
  return out;
}

// Where chunks must begin: at each valid section's start and end.
function sectionCuts(sections, n) {
  const cuts = new Set();
  for (const s of Array.isArray(sections) ? sections : []) {
    if (Array.isArray(s) && Number.isInteger(s[0]) && Number.isInteger(s[1])
      && s[0] >= 0 && s[0] < s[1] && s[1] <= n) {
      cuts.add(s[0]);
      cuts.add(s[1]);
    }
  }
  return cuts;
}

// Bring the chunks up to `tokens`, keeping tokens [0, keep) (and their spans) as they are:
// the chunk holding `keep` and all after it are cut again. Section cuts that changed cut
// everything again. Returns nothing; spans of dropped tokens are removed.
function rechunk(state, tokens, keep, cuts) {
  const key = [...cuts].sort((a, b) => a - b).join(",");
  if (key !== state.cutKey) {
    state.cutKey = key;
    keep = 0;
  }
  const { chunks, view } = state;
  let k = chunks.length;
  while (k > 0 && chunks[k - 1].end > keep) k--;
  // chunks[k - 1] ends at or before keep; it is cut again too unless it ended on a cut
  // of the rule (the rule decides a chunk's end from its start alone).
  if (k > 0 && chunks[k - 1].end === keep && !chunks[k - 1].closed) k--;
  const from = k > 0 ? chunks[k - 1].end : 0;
  const moved = [];
  for (const chunk of chunks.splice(k)) {
    for (let i = chunk.start; i < chunk.end; i++) {
      const span = state.spans[i];
      if (!span) continue;
      if (i < keep) moved[i] = span;
      else span.remove();
    }
    chunk.node.remove();
  }
  for (let i = keep; i < state.spans.length; i++) delete state.spans[i];
  state.spans.length = tokens.length;
  const caret = view.querySelector(".tv-caret");
  const fresh = cutChunks(tokens, from, cuts);
  fresh.forEach((chunk, j) => {
    // The last chunk is open: more tokens (streaming) may extend it.
    chunk.closed = j < fresh.length - 1 || chunk.end - chunk.start >= CHUNK_MAX
      || (chunk.end - chunk.start >= CHUNK && tokens[chunk.end - 1].t.indexOf("\n") >= 0);
    chunk.node = el("span", "tv-chunk pending");
    chunk.drawn = false;
    chunk.height = null;
    view.insertBefore(chunk.node, caret);
    chunks.push(chunk);
  });
  // Spans kept from the dropped chunks go back at once into their new chunks.
  for (const chunk of fresh) {
    if (moved[chunk.start] !== undefined) drawChunk(state, chunk, moved);
  }
}

// Fill a chunk with its token spans (reusing `reuse[i]` where given), decorated.
function drawChunk(state, chunk, reuse) {
  const frag = document.createDocumentFragment();
  for (let i = chunk.start; i < chunk.end; i++) {
    let span = reuse && reuse[i];
    if (!span) {
      span = makeSpan(state.tokens[i], i);
      decorate(state, i, span);
    }
    state.spans[i] = span;
    frag.appendChild(span);
  }
  chunk.node.replaceChildren(frag);
  chunk.node.classList.remove("pending");
  chunk.node.style.height = "";
  chunk.drawn = true;
}

// Empty a drawn chunk into a pending block of the height it had.
function dropChunk(state, chunk) {
  const height = chunk.node.getBoundingClientRect().height;
  if (state.hovered && chunk.node.contains(state.hovered)) return; // keep what is pointed at
  chunk.height = height;
  for (let i = chunk.start; i < chunk.end; i++) delete state.spans[i];
  chunk.node.replaceChildren();
  chunk.node.classList.add("pending");
  chunk.node.style.height = height + "px";
  chunk.drawn = false;
}

// A pending chunk's height: measured when it was drawn, else guessed from its text
// (lines of `line` px holding `perLine` characters).
function pendingHeight(chunk, line, perLine) {
  if (chunk.height !== null) return chunk.height;
  return Math.round((chunk.lines + Math.ceil(chunk.chars / perLine)) * line);
}

// The span of token `index`, drawing its chunk if need be (null if there is none).
function spanAt(state, index) {
  if (state.spans[index]) return state.spans[index];
  const chunk = chunkOf(state, index);
  if (!chunk) return null;
  drawChunk(state, chunk);
  return state.spans[index] || null;
}

function isLazy(state) {
  return state.tokens.length > state.eagerMax;
}

// Draw what is near the visible part of the box, drop what is far from it, and keep the
// text in sight where it was (chunks above it may change height).
function drawVisible(state) {
  const { chunks, view } = state;
  if (!isLazy(state)) {
    for (const chunk of chunks) if (!chunk.drawn) drawChunk(state, chunk);
    return;
  }
  const height = view.clientHeight;
  if (!height) return; // not laid out (hidden): drawn when it is (the resize observer)
  const line = parseFloat(getComputedStyle(view).lineHeight) || 28;
  const perLine = Math.max(20, view.clientWidth / 8.5);
  for (const chunk of chunks) {
    if (!chunk.drawn) chunk.node.style.height = pendingHeight(chunk, line, perLine) + "px";
  }
  for (let round = 0; round < 4; round++) {
    const box = view.getBoundingClientRect();
    const tops = chunks.map((c) => c.node.getBoundingClientRect());
    const near = (r, margin) => r.bottom > box.top - margin && r.top < box.bottom + margin;
    // The anchor: the first drawn chunk in sight (its height will not change).
    let anchor = chunks.findIndex((c, j) => c.drawn && near(tops[j], 0));
    if (anchor < 0) anchor = chunks.findIndex((c, j) => near(tops[j], 0));
    const before = anchor >= 0 ? tops[anchor].top : 0;
    let changed = false;
    chunks.forEach((chunk, j) => {
      if (chunk.node.classList.contains("folded")) return;
      if (!chunk.drawn && near(tops[j], MARGIN * height)) {
        drawChunk(state, chunk);
        changed = true;
      } else if (chunk.drawn && !near(tops[j], 2 * MARGIN * height)) {
        dropChunk(state, chunk);
        changed = true;
      }
    });
    if (!changed) return;
    if (anchor >= 0) {
      const shift = chunks[anchor].node.getBoundingClientRect().top - before;
      if (shift) view.scrollTop += shift;
    }
  }
}

// Classes a span takes from the view's state when it is (re)made.
function decorate(state, i, span) {
  const cl = span.classList;
  if (i === state.selected) cl.add("selected");
  if (i === state.highlight) cl.add("highlight");
  if (i === state.navAt) cl.add("navhit");
  if (state.alerts.has(i)) cl.add("alert");
  if (state.range && i >= state.range[0] && i <= state.range[1]) cl.add("in-range");
  if (state.annAt.has(i)) cl.add("annotated");
  if (state.annStarts && state.annStarts.has(i)) cl.add("ann-start");
  if (state.found && state.found.tokens.has(i)) cl.add("found");
  const chunk = chunkOf(state, i);
  if (chunk && chunk.node.classList.contains("folded")) cl.add("folded");
}
