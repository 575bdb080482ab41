"""Acting on the token view: inject and branch, token sets, annotations, range statistics.

Pages call `act_on` with the event of the rerun, and `investigation_panels` below the
transcript. Everything that changes is saved into the open session at once.
"""

from __future__ import annotations

import difflib
from dataclasses import replace

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import before_after_timeline, visible_token
from perplex.core.records import DecodeParams, Generation, TokenStep
from perplex.core.stats import summarise
from perplex.engine.protocol import Engine
from perplex.ui.components.attribution_panel import attribute
from perplex.ui.components.branching import continue_as_branch
from perplex.ui.components.token_tree_panel import build_tree
from perplex.ui.components.token_view import AnnotationMark, TokenSetInfo
from perplex.ui.components.transcript import TranscriptEvent, highlight_key, jump_to
from perplex.ui.shell import page_state, resources
from perplex.ui.shell.session_panel import (
    current_session_id,
    read_only,
    remember_shown,
)
from perplex.ui.shell.text import count, plain
from perplex.workspace.annotations import add_annotation, delete_annotation, edit_annotation
from perplex.workspace.annotations import list_annotations as generation_annotations
from perplex.workspace.branches import branch_tree
from perplex.workspace.token_sets import add_token, create_token_set, list_token_sets, remove_token


def view_extras(gen: Generation, message_index: int,
                steps: tuple[TokenStep, ...]) -> tuple[list[TokenSetInfo], list[AnnotationMark]]:
    """Token sets for the menu and annotation marks for one message's view."""
    store = resources.store()
    sid = current_session_id()
    sets = [TokenSetInfo(s.name, frozenset(s.token_ids(gen.model_label)))
            for s in list_token_sets(store, sid)] if sid else []
    index_of = {s.position: i for i, s in enumerate(steps)}
    marks = []
    for note in generation_annotations(store, gen.id):
        covered = [index_of[p] for p in range(note.start, note.end + 1) if p in index_of]
        if covered:
            marks.append(AnnotationMark(min(covered), max(covered), note.text))
    return sets, marks


def act_on(found: TranscriptEvent | None, gen: Generation, page_key: str,
           engine: Engine | None, params: DecodeParams) -> None:
    """Carry out a token-view action on the generation `gen` shown under `page_key`."""
    if found is None or found.event.kind in ("click", "select_range"):
        return
    if found.event.kind == "open_lens":
        position = found.steps[found.event.index].position
        page_state.open_in_lens(gen.id, position)
    if found.event.kind == "attribute":  # reads the session only: read-only links may too
        attribute(found.steps[found.event.index], gen, page_key, engine)
        return
    if found.event.kind == "tree":  # likewise
        build_tree(found.steps[found.event.index], gen, page_key, engine)
        return
    if read_only():
        st.warning("This session is open read-only (shared link): fork it to make changes.")
        return
    event, step = found.event, found.steps[found.event.index]
    try:
        if event.kind in ("inject", "branch"):
            _regenerate(found, gen, page_key, engine, params)
        elif event.kind in ("add_to_set", "new_set"):
            _add_to_set(event.set_name, gen, step)
        elif event.kind == "annotate":
            add_annotation(resources.store(), gen.id, step.position, event.text)
        elif event.kind == "annotate_range":
            end = found.steps[event.end_index].position
            add_annotation(resources.store(), gen.id, step.position, event.text, end=end)
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    st.rerun()


def _regenerate(found: TranscriptEvent, gen: Generation, page_key: str,
                engine: Engine | None, params: DecodeParams) -> None:
    event, step = found.event, found.steps[found.event.index]
    if event.seed is not None or event.temperature is not None:
        params = replace(params, seed=event.seed,
                         temperature=params.temperature if event.temperature is None
                         else event.temperature)
    forced = event.token_id if event.token_id is not None else event.text
    st.caption(f"Regenerating from token #{event.index}…")
    continue_as_branch(gen, step, forced, _branch_title(event, step), page_key, engine, params)


def _branch_title(event, step: TokenStep) -> str:
    """What a new branch is, e.g. `inject “ Lyon” at #0` or `branch seed 7, T 1.0 at #2`."""
    what = [f"“{event.text}”"] if event.text is not None and event.text != step.text else []
    what += [f"seed {event.seed}"] if event.seed is not None else []
    what += [f"T {event.temperature:g}"] if event.temperature is not None else []
    return " ".join(part for part in (event.kind, ", ".join(what), f"at #{event.index}") if part)


def _add_to_set(name: str, gen: Generation, step: TokenStep) -> None:
    store = resources.store()
    sid = current_session_id()
    if sid is None:
        raise PerplexError("Save something in a session first: token sets belong to a session.")
    existing = {s.name: s for s in list_token_sets(store, sid)}
    token_set = existing.get(name) or create_token_set(store, sid, name)
    add_token(store, token_set.id, gen.model_label, step.token_id, step.text)


def parent_comparison(current: Generation) -> tuple[Generation, int, int] | None:
    """(parent, message index, index of the split in that message's view) of a branch.

    None for a generation that is no branch, or whose parent is no longer stored.
    """
    if current.parent_id is None or current.branch_position is None \
            or current.branch_position >= len(current.steps):
        return None
    try:
        parent = resources.store().load_generation(current.parent_id)
    except PerplexError:
        return None
    split = current.view_indices().get(current.branch_position)
    if split is None:
        return None
    return parent, current.steps[current.branch_position].message_index, split


def comparison_panel(page_key: str) -> None:
    """A branch against its parent: one timeline, both continuations, differences marked."""
    current = st.session_state.get(page_key)
    found = parent_comparison(current) if current is not None else None
    if found is None:
        return
    parent, message_index, split = found
    before = [s for s in parent.message_steps(message_index) if s.role.value == "response"]
    after = [s for s in current.message_steps(message_index) if s.role.value == "response"]
    with st.expander(f"Before and after: this branch against its parent "
                     f"(split at #{split})", expanded=True):
        st.plotly_chart(before_after_timeline(before, after, split),
                        key=f"{page_key}-beforeafter-{current.id}")
        marked_before, marked_after = token_diff([s.text for s in before[split:]],
                                                 [s.text for s in after[split:]])
        left, right = st.columns(2)
        left.caption(f"parent: {plain(parent.title or 'original')}")
        left.markdown(marked_before)
        right.caption(f"this branch: {plain(current.title or 'branch')}")
        right.markdown(marked_after)
        st.caption("Highlighted: tokens that differ between the two continuations.")


def token_diff(before: list[str], after: list[str]) -> tuple[str, str]:
    """Both continuations as Markdown, the tokens that differ (aligned by difflib) marked."""
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    left, right = [], []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for out, pieces, colour in ((left, before[i1:i2], "red"), (right, after[j1:j2], "green")):
            text = _diff_text("".join(pieces))
            if text:
                out.append(text if tag == "equal" else f":{colour}-background[{text}]")
    return "".join(left) or "(nothing)", "".join(right) or "(nothing)"


def _diff_text(text: str) -> str:
    """Token text for inline Markdown: escaped, line breaks kept visible as ↵."""
    return plain(text.replace("\n", "↵ "))


def branch_navigator(page_key: str) -> None:
    """Parent and children of the generation on screen; click one to switch to it."""
    current = st.session_state.get(page_key)
    if current is None:
        return
    tree = branch_tree(resources.store(), current.id)
    size = len(list(tree.nodes()))
    if size < 2:  # no parent and no children: nothing to navigate
        return
    with st.expander(f"Branches ({size} in this tree)", expanded=True):
        for node in tree.nodes():
            depth = len(_ancestors(tree, node))
            here = " ← on screen" if node.id == current.id else ""
            split = "" if node.branch_position is None or node.title else \
                f" · split at position {node.branch_position}"
            # Non-breaking spaces: leading plain spaces would turn the label into code.
            indent = "\u00a0\u00a0\u00a0" * depth + ("↳ " if depth else "")
            label = f"{indent}{node.title or 'original'}{split}{here}"
            if st.button(plain(label), key=f"{page_key}-branch-{node.id}",
                         disabled=node.id == current.id):
                st.session_state[page_key] = resources.store().load_generation(node.id)
                remember_shown(page_key, node.id)  # a reload shows the branch chosen here
                st.rerun()
        _compare_branches(tree, current, page_key)


def _compare_branches(tree, current: Generation, page_key: str) -> None:
    """The answer on screen beside the answer of another branch of the same tree."""
    others = {n.id: n for n in tree.nodes() if n.id != current.id}
    if not others:
        return
    other_id = st.selectbox(
        "Compare side by side with", [None, *others], key=f"{page_key}-compare-with",
        format_func=lambda i: "—" if i is None else (others[i].title or "original"))
    if other_id is None:
        return
    other = resources.store().load_generation(other_id)
    for column, gen, label in zip(st.columns(2), (current, other),
                                  ("on screen", others[other_id].title or "original")):
        last = len(gen.messages) - 1
        steps = [s for s in gen.message_steps(last) if s.role.value == "response"]
        summary = summarise(steps)
        column.caption(f"{plain(label)} · {count(summary.n_tokens, 'token')} · mean p "
                       f"{summary.mean_prob or 0:.3f} · perplexity {summary.perplexity or 0:.2f}")
        column.text(gen.messages[last].content)


def _ancestors(tree, node) -> list:
    chain, parent = [], node.parent_id
    while parent is not None and (found := tree.find(parent)) is not None:
        chain.append(found)
        parent = found.parent_id
    return chain


def annotations_panel(page_key: str) -> None:
    """The session's annotations: edit, delete, or jump to the annotated generation."""
    current = st.session_state.get(page_key)
    if current is None:
        return
    notes = generation_annotations(resources.store(), current.id)
    if not notes:
        return
    index_of = current.view_indices()
    with st.expander(f"Annotations ({len(notes)})", expanded=True):
        for note in notes:
            first, last = index_of.get(note.start), index_of.get(note.end)
            if first is not None and last is not None:  # numbered as in the token view
                span = f"token #{first}" if note.start == note.end else f"tokens #{first}–{last}"
            else:
                span = f"position {note.start}" + (
                    f"–{note.end}" if note.end != note.start else "")
            cols = st.columns([1.2, 6, 0.9, 1])
            cols[0].caption(span)
            text = cols[1].text_input("note", note.text, key=f"note-{note.id}",
                                      label_visibility="collapsed", disabled=read_only())
            if text.strip() and text != note.text:
                edit_annotation(resources.store(), note.id, text)
            if first is not None and note.start < len(current.steps):
                message_index = current.steps[note.start].message_index
                cols[2].button("Jump", key=f"note-jump-{note.id}", on_click=_jump,
                               args=(page_key, current.id, message_index, first),
                               help="Highlight the annotated token in the view")
            if cols[3].button("Delete", key=f"note-del-{note.id}", disabled=read_only()):
                delete_annotation(resources.store(), note.id)
                st.rerun()


def _jump(page_key: str, generation_id: str, message_index: int, index: int) -> None:
    prefix = page_key.rsplit(".", 1)[0]
    jump_to(highlight_key(prefix, generation_id, message_index), index)


def token_sets_panel(gen: Generation | None) -> None:
    """The session's token sets, with their members; remove a token with one click."""
    sid = current_session_id()
    if sid is None or gen is None:
        return
    sets = list_token_sets(resources.store(), sid)
    if not sets:
        return
    with st.expander(f"Token sets ({len(sets)})"):
        for token_set in sets:
            tokens = _distinct_tokens(token_set, gen.model_label)
            st.markdown(f"**{plain(token_set.name)}** · {count(len(tokens), 'token')}")
            for token_id, (text, words) in tokens.items():
                # One button per token id: several words can start with the same token
                # ("I" and "I'm"), and removing the id removes it under each of them.
                if st.button(f"✕ “{plain(visible_token(text))}” (id {token_id}; "
                             f"{plain(', '.join(words))})", help="Remove from the set",
                             key=f"set-{token_set.id}-{token_id}",
                             disabled=read_only()):
                    remove_token(resources.store(), token_set.id, gen.model_label, token_id)
                    st.rerun()


def _distinct_tokens(token_set, tokenizer: str) -> dict[int, tuple[str, list[str]]]:
    """Token id → (its text, the words it was entered as), first seen first."""
    tokens: dict[int, tuple[str, list[str]]] = {}
    for member in token_set.members:
        if member.tokenizer == tokenizer:
            tokens.setdefault(member.token_id, (member.token_text, []))[1].append(member.word)
    return tokens
