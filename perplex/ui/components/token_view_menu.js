// The token view's context menu and range bar. Concatenated before token_view.js into
// one module (see token_view.py): it uses that file's el(), visible(), fmtProb(),
// topLimit() and send(), and that file calls openMenu(), closeMenu(), placeOverlays(),
// setRange() and createOverlays().
//
// Every text here (tokens, alternatives, set names, notes) is set with textContent or
// as an attribute value, never parsed as HTML. Key presses inside the menu and the bar
// stop at them: Streamlit's page-wide shortcuts ("r" reruns, "c" clears the cache)
// would otherwise see typing in these fields, since the shadow root hides the fields.

const MENU_GAP = 4; // px between a token and its menu
const MAX_SEED = 4294967295;
const MAX_TEMPERATURE = 10;
const MAX_SET_NAME = 200;
const NOTE_PREVIEW = 280; // characters of a note shown in tooltips and the menu

function createOverlays(state) {
  state.menu = el("div", "tv-menu");
  state.menu.setAttribute("role", "menu");
  state.menu.hidden = true;
  state.bar = el("div", "tv-rangebar");
  state.bar.hidden = true;
  for (const node of [state.menu, state.bar]) {
    for (const type of ["keydown", "keyup", "keypress"]) {
      node.addEventListener(type, (ev) => {
        ev.stopPropagation();
        if (type === "keydown" && ev.key === "Escape") escape(state);
      });
    }
    state.root.appendChild(node);
  }
}

// Escape closes the menu, or else the range bar's note form.
function escape(state) {
  if (state.menuAt) closeMenu(state);
  else if (state.range) showBar(state, false);
}

function shorten(text, max) {
  return text.length > max ? text.slice(0, max - 1) + "\u2026" : text;
}

function button(className, label, onClick) {
  const node = el("button", className, label);
  node.type = "button";
  node.addEventListener("click", (ev) => {
    ev.stopPropagation();
    onClick(ev);
  });
  return node;
}

function field(tag, className, placeholder) {
  const node = el(tag, className);
  if (placeholder) node.placeholder = placeholder;
  if (tag === "input") node.type = "text";
  node.spellcheck = false;
  return node;
}

// A hint line under a form: shown with a message, hidden when the form is submitted.
function hintLine() {
  const hint = el("div", "menu-hint");
  hint.setAttribute("aria-live", "polite");
  hint.hidden = true;
  hint.say = (message) => {
    hint.textContent = message;
    hint.hidden = !message;
  };
  return hint;
}

// ---- the menu --------------------------------------------------------------------

function openMenu(state, index) {
  const tok = state.tokens[index];
  const { menu } = state;
  menu.replaceChildren();
  state.menuAt = { index, tok };

  const head = el("div", "menu-head");
  head.appendChild(el("span", "menu-token", "\u201c" + visible(tok.t) + "\u201d"));
  const facts = ["token " + index];
  if (tok.p !== null && tok.p !== undefined) facts.unshift("p " + fmtProb(tok.p));
  head.appendChild(el("span", "menu-facts", facts.join(" \u00b7 ")));
  const close = button("menu-close", "\u00d7", () => closeMenu(state));
  close.setAttribute("aria-label", "Close");
  head.appendChild(close);
  menu.appendChild(head);

  section(state, "inject", "\u21bb", "Inject and regenerate from here", buildInject);
  section(state, "branch", "\u21b3", "Branch from this token", buildBranch);
  section(state, "sets", "+", "Add to token set", buildSets);
  section(state, "annotate", "\u270e", "Annotate", buildAnnotate);
  if (state.lens) {
    const lens = button("menu-item", "", () => act(state, "open_lens", {}));
    lens.dataset.action = "open_lens";
    lens.appendChild(el("span", "menu-icon", "\u25ce"));
    lens.appendChild(el("span", "menu-label", "Open in Logit Lens"));
    menu.appendChild(lens);
    const attribute = button("menu-item", "", () => act(state, "attribute", {}));
    attribute.dataset.action = "attribute";
    attribute.appendChild(el("span", "menu-icon", "\u2190"));
    attribute.appendChild(el("span", "menu-label", "Attribute to earlier tokens"));
    menu.appendChild(attribute);
    const tree = button("menu-item", "", () => act(state, "tree", {}));
    tree.dataset.action = "tree";
    tree.appendChild(el("span", "menu-icon", "\u2442"));
    tree.appendChild(el("span", "menu-label", "Expand a token tree here"));
    menu.appendChild(tree);
  }
  menu.hidden = false;
  placeMenu(state);
  const first = menu.querySelector(".menu-item");
  if (first) first.focus({ preventScroll: true });
}

function closeMenu(state) {
  state.menuAt = null;
  state.menu.hidden = true;
  state.menu.replaceChildren();
}

// Send the menu's token with `fields`, then close the menu.
function act(state, kind, fields) {
  const { index } = state.menuAt;
  closeMenu(state);
  send(state, kind, index, fields);
}

// One action: a row that opens its panel (one panel open at a time), built on first open.
function section(state, name, icon, label, build) {
  const item = button("menu-item", "", () => {
    const open = !panel.hidden;
    state.menu.querySelectorAll(".menu-panel").forEach((p) => { p.hidden = true; });
    state.menu.querySelectorAll(".menu-item").forEach((i) => i.classList.remove("open"));
    if (!open) {
      if (!panel.childElementCount) build(state, panel, state.menuAt.tok);
      panel.hidden = false;
      item.classList.add("open");
      const input = panel.querySelector("input, textarea, select");
      if (input) input.focus({ preventScroll: true });
    }
    placeMenu(state);
  });
  item.dataset.action = name;
  item.appendChild(el("span", "menu-icon", icon));
  item.appendChild(el("span", "menu-label", label));
  item.appendChild(el("span", "menu-chevron", "\u203a"));
  const panel = el("div", "menu-panel");
  panel.dataset.panel = name;
  panel.hidden = true;
  state.menu.appendChild(item);
  state.menu.appendChild(panel);
}

// The alternatives as buttons: "“text”  p-bar  p", the token itself marked.
function alternativeList(tok, onPick) {
  const list = el("div", "menu-alts");
  (tok.alt || []).forEach(([text, p], i) => {
    const chosen = tok.ac === i;
    const row = button("menu-alt" + (chosen ? " chosen" : ""), "", () => onPick(i));
    row.dataset.alt = String(i);
    row.appendChild(el("span", "alt-mark", chosen ? "\u25b8" : ""));
    row.appendChild(el("span", "alt-text", "\u201c" + visible(text) + "\u201d"));
    const bar = el("span", "alt-bar");
    const fill = el("span", "alt-fill");
    fill.style.width = Math.max(0, Math.min(1, Number(p) || 0)) * 100 + "%";
    bar.appendChild(fill);
    row.appendChild(bar);
    row.appendChild(el("span", "alt-p", fmtProb(p)));
    if (chosen) {
      row.disabled = true;
      row.title = "the token itself";
    }
    list.appendChild(row);
  });
  return list;
}

function buildInject(state, panel, tok) {
  if (tok.alt && tok.alt.length) {
    panel.appendChild(el("div", "menu-caption", "top " + tok.alt.length + " alternatives"));
    panel.appendChild(alternativeList(tok, (i) => act(state, "inject", { alt: i })));
  } else {
    panel.appendChild(el("div", "menu-caption", "no alternatives recorded"));
  }
  panel.appendChild(el("div", "menu-caption", "or type any text"));
  const row = el("div", "menu-row");
  const input = field("input", "menu-input", "text to force here");
  input.dataset.field = "inject-text";
  const hint = hintLine();
  const submit = () => {
    if (input.value === "") {
      hint.say("Type the text to inject first.");
      input.focus();
      return;
    }
    act(state, "inject", { text: input.value });
  };
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") submit(); });
  input.addEventListener("input", () => hint.say(""));
  row.appendChild(input);
  row.appendChild(button("menu-btn", "Inject", submit));
  panel.appendChild(row);
  panel.appendChild(hint);
}

function numberOrNull(text) {
  const value = text.trim();
  return value === "" ? null : Number(value);
}

function buildBranch(state, panel, tok) {
  panel.appendChild(el("div", "menu-caption", "continue with"));
  const choice = el("select", "menu-select");
  choice.dataset.field = "branch-choice";
  const same = el("option", "", "the same token \u201c" + visible(tok.t) + "\u201d");
  same.value = "same";
  choice.appendChild(same);
  (tok.alt || []).forEach(([text, p], i) => {
    if (tok.ac === i) return;
    const option = el("option", "", "\u201c" + visible(text) + "\u201d  p " + fmtProb(p));
    option.value = String(i);
    choice.appendChild(option);
  });
  panel.appendChild(choice);
  const row = el("div", "menu-row");
  const seed = field("input", "menu-input menu-num", "random");
  seed.inputMode = "numeric";
  seed.dataset.field = "seed";
  const temperature = field("input", "menu-input menu-num", "as before");
  temperature.inputMode = "decimal";
  temperature.dataset.field = "temperature";
  const labelled = (label, input) => {
    const box = el("label", "menu-labelled");
    box.appendChild(el("span", "menu-caption", label));
    box.appendChild(input);
    return box;
  };
  row.appendChild(labelled("seed", seed));
  row.appendChild(labelled("temperature", temperature));
  panel.appendChild(row);
  const hint = hintLine();
  const submit = () => {
    const s = numberOrNull(seed.value);
    const t = numberOrNull(temperature.value);
    if (s !== null && !(Number.isInteger(s) && s >= 0 && s <= MAX_SEED)) {
      hint.say("The seed is a whole number from 0 to " + MAX_SEED + ".");
    } else if (t !== null && !(Number.isFinite(t) && t >= 0 && t <= MAX_TEMPERATURE)) {
      hint.say("The temperature is a number from 0 to " + MAX_TEMPERATURE + ".");
    } else if (choice.value === "same" && s === null && t === null) {
      hint.say("Keeping the token: give another seed or temperature.");
    } else {
      const pick = choice.value === "same" ? { same: true } : { alt: Number(choice.value) };
      act(state, "branch", Object.assign(pick, { seed: s, temperature: t }));
      return;
    }
  };
  for (const input of [seed, temperature]) {
    input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") submit(); });
    input.addEventListener("input", () => hint.say(""));
  }
  choice.addEventListener("change", () => hint.say(""));
  panel.appendChild(button("menu-btn menu-wide", "Branch", submit));
  panel.appendChild(hint);
}

function buildSets(state, panel, tok) {
  if (tok.id === undefined || tok.id === null) {
    panel.appendChild(el("div", "menu-caption", "This token has no id: it cannot go into a set."));
    return;
  }
  const names = new Map(state.sets.map(([name, ids]) => [name, ids.indexOf(tok.id) >= 0]));
  if (!names.size) panel.appendChild(el("div", "menu-caption", "no token sets yet"));
  const list = el("div", "menu-sets");
  for (const [name, has] of names) {
    const row = button("menu-set" + (has ? " has" : ""), "",
      () => act(state, "add_to_set", { set_name: name }));
    row.dataset.set = name;
    row.title = has ? name + " (holds this token)" : name;
    row.appendChild(el("span", "set-mark", has ? "\u2713" : ""));
    row.appendChild(el("span", "set-name", name));
    if (has) {
      row.appendChild(el("span", "set-note", "in set"));
      row.disabled = true;
    }
    list.appendChild(row);
  }
  panel.appendChild(list);

  const form = el("div", "menu-row");
  form.hidden = true;
  const input = field("input", "menu-input", "set name");
  input.dataset.field = "set-name";
  input.maxLength = MAX_SET_NAME;
  const hint = hintLine();
  const submit = () => {
    const name = input.value.trim();
    if (!name) {
      hint.say("Name the set first.");
    } else if (names.get(name)) {
      hint.say("\u201c" + name + "\u201d already holds this token.");
    } else {
      act(state, names.has(name) ? "add_to_set" : "new_set", { set_name: name });
    }
  };
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") submit(); });
  input.addEventListener("input", () => hint.say(""));
  form.appendChild(input);
  form.appendChild(button("menu-btn", "Add", submit));
  const opener = button("menu-set menu-new", "", () => {
    opener.hidden = true;
    form.hidden = false;
    input.focus();
    placeMenu(state);
  });
  opener.appendChild(el("span", "set-mark", "+"));
  opener.appendChild(el("span", "set-name", "New set\u2026"));
  panel.appendChild(opener);
  panel.appendChild(form);
  panel.appendChild(hint);
}

// A form with a textarea and Save; Ctrl/Cmd+Enter saves too.
function noteForm(placeholder, onSave) {
  const form = el("div", "menu-noteform");
  const area = field("textarea", "menu-note", placeholder);
  area.rows = 3;
  area.dataset.field = "note";
  const hint = hintLine();
  const submit = () => {
    if (!area.value.trim()) {
      hint.say("Write a note first.");
      area.focus();
      return;
    }
    onSave(area.value);
  };
  area.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) submit();
  });
  area.addEventListener("input", () => hint.say(""));
  form.appendChild(area);
  form.appendChild(button("menu-btn menu-wide", "Save", submit));
  form.appendChild(hint);
  form.area = area;
  form.hint = hint;
  return form;
}

function buildAnnotate(state, panel) {
  const notes = notesAt(state, state.menuAt.index);
  if (notes.length) {
    panel.appendChild(el("div", "menu-caption", "notes here"));
    for (const [start, end, note] of notes) {
      const row = el("div", "menu-oldnote", shorten(note, NOTE_PREVIEW));
      if (end > start) row.dataset.range = "tokens " + start + "\u2013" + end;
      panel.appendChild(row);
    }
  }
  panel.appendChild(noteForm("Note on this token", (text) => act(state, "annotate", { text })));
}

// Fixed-position menu beside its token: below it, else above, kept in the viewport.
function placeMenu(state) {
  if (!state.menuAt) return;
  const span = state.spans[state.menuAt.index];
  if (!span || !span.isConnected) {
    closeMenu(state);
    return;
  }
  const { menu } = state;
  const rects = span.getClientRects();
  const r = rects.length ? rects[rects.length - 1] : span.getBoundingClientRect();
  if (!visibleIn(state.view, r)) {
    closeMenu(state); // its token was scrolled out of the view
    return;
  }
  const vw = document.documentElement.clientWidth || window.innerWidth;
  const vh = document.documentElement.clientHeight || window.innerHeight;
  const minTop = topLimit();
  menu.style.maxHeight = Math.max(120, vh - minTop - EDGE) + "px";
  const w = menu.offsetWidth;
  const h = menu.offsetHeight;
  const below = r.bottom + MENU_GAP;
  const above = r.top - MENU_GAP - h;
  let top = below;
  if (below + h > vh - EDGE) top = above >= minTop ? above : Math.max(minTop, vh - EDGE - h);
  let left = r.left;
  if (left + w > vw - EDGE) left = vw - EDGE - w;
  menu.style.left = Math.round(Math.max(EDGE, left)) + "px";
  menu.style.top = Math.round(top) + "px";
}

// ---- the range bar ---------------------------------------------------------------

// Select steps range[0]..range[1] (or nothing): paint them, show the bar over them.
function setRange(state, range) {
  state.range = range;
  paintRange(state);
  showBar(state, false);
}

function paintRange(state) {
  state.view.querySelectorAll(".tok.in-range").forEach((s) => s.classList.remove("in-range"));
  const r = state.range;
  if (!r) return;
  for (let i = r[0]; i <= r[1] && i < state.spans.length; i++) {
    if (state.spans[i]) state.spans[i].classList.add("in-range");
  }
}

// (Re)build the bar for the current range; `withForm` opens its note form.
function showBar(state, withForm) {
  const { bar } = state;
  bar.replaceChildren();
  const r = state.range;
  if (!r || state.streaming || r[1] >= state.spans.length) {
    bar.hidden = true;
    return;
  }
  const count = r[1] - r[0] + 1;
  const line = el("div", "bar-line");
  const label = (count === 1 ? "1 token" : count + " tokens")
    + " \u00b7 #" + r[0] + "\u2013" + r[1];
  line.appendChild(el("span", "bar-count", label));
  line.appendChild(button("menu-btn bar-annotate", "Annotate range",
    () => showBar(state, !withForm)));
  bar.appendChild(line);
  if (withForm) {
    const form = noteForm("Note on these " + count + " tokens", (text) => {
      const [start, end] = state.range;
      state.bar.hidden = true; // annotated: Python drops the range on the rerun
      send(state, "annotate_range", start, { end_index: end, end_pos: state.tokens[end].pos,
        text });
    });
    bar.appendChild(form);
    bar.hidden = false;
    placeBar(state);
    form.area.focus({ preventScroll: true });
    return;
  }
  bar.hidden = false;
  placeBar(state);
}

// In sight: inside the view's scroll box and inside the window (below the app's header).
function visibleIn(view, rect) {
  const box = view.getBoundingClientRect();
  const vh = document.documentElement.clientHeight || window.innerHeight;
  return rect.bottom > box.top && rect.top < box.bottom
    && rect.bottom > topLimit() && rect.top < vh;
}

// Above the range's first token when it is in sight, else below its last; else hidden.
function placeBar(state) {
  const { bar, range, view } = state;
  if (bar.hidden || !range) return;
  // An end of the range far from the screen has no span (token_view_chunks.js).
  const first = state.spans[range[0]] ? state.spans[range[0]].getClientRects()[0] : null;
  const lastRects = state.spans[range[1]] ? state.spans[range[1]].getClientRects() : [];
  const last = lastRects[lastRects.length - 1];
  const h = bar.offsetHeight;
  const w = bar.offsetWidth;
  const vw = document.documentElement.clientWidth || window.innerWidth;
  const vh = document.documentElement.clientHeight || window.innerHeight;
  const minTop = topLimit();
  let anchor = null;
  let top = 0;
  if (first && visibleIn(view, first) && first.top - MENU_GAP - h >= minTop) {
    anchor = first;
    top = first.top - MENU_GAP - h;
  } else if (last && visibleIn(view, last)) {
    anchor = last;
    top = Math.min(last.bottom + MENU_GAP, vh - EDGE - h);
  } else if (first && visibleIn(view, first)) {
    anchor = first;
    top = first.bottom + MENU_GAP;
  }
  bar.classList.toggle("out-of-sight", anchor === null);
  if (anchor === null) return;
  let left = anchor.left;
  if (left + w > vw - EDGE) left = vw - EDGE - w;
  bar.style.left = Math.round(Math.max(EDGE, left)) + "px";
  bar.style.top = Math.round(Math.max(minTop, top)) + "px";
}

function placeOverlays(state) {
  placeMenu(state);
  placeBar(state);
}

// ---- annotations -----------------------------------------------------------------

// Index the notes by token and mark the tokens they cover.
function applyAnnotations(state, ann) {
  state.ann = Array.isArray(ann) ? ann : [];
  state.annAt = new Map();
  state.ann.forEach((mark, k) => {
    const [start, end] = mark;
    for (let i = start; i <= end && i < state.spans.length; i++) {
      if (!state.annAt.has(i)) state.annAt.set(i, []);
      state.annAt.get(i).push(k);
    }
  });
  const starts = new Set(state.ann.map((mark) => mark[0]));
  state.annStarts = starts;
  state.spans.forEach((span, i) => {
    span.classList.toggle("annotated", state.annAt.has(i));
    span.classList.toggle("ann-start", starts.has(i));
  });
}

function notesAt(state, index) {
  return (state.annAt.get(index) || []).map((k) => state.ann[k]);
}

const TIP_NOTES = 3; // notes shown in a tooltip; the menu's Annotate panel lists them all

function addNotesToTip(tip, notes) {
  if (!notes.length) return;
  const box = el("div", "tip-notes");
  for (const [start, end, note] of notes.slice(0, TIP_NOTES)) {
    const row = el("div", "tip-note");
    row.appendChild(el("span", "tip-label",
      end > start ? "\u270e note on tokens " + start + "\u2013" + end : "\u270e note"));
    row.appendChild(el("div", "tip-note-text", shorten(note, NOTE_PREVIEW)));
    box.appendChild(row);
  }
  if (notes.length > TIP_NOTES) {
    box.appendChild(el("div", "tip-label", "+ " + (notes.length - TIP_NOTES) + " more notes"));
  }
  tip.appendChild(box);
}
