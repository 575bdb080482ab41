"""The researcher's own token sets beside the R-Set and C-Set: listed, added, deleted.

They are the session's other token sets (the token view's "Add to token set" makes them
too); the Prefilling page shows P(set) at the first token for each one that has ids.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import visible_token
from perplex.engine.protocol import Engine
from perplex.modes import prefill
from perplex.ui.shell import resources, session_panel
from perplex.ui.shell.text import plain
from perplex.workspace.token_sets import (
    TokenSet,
    add_words,
    create_token_set,
    delete_token_set,
    list_token_sets,
)


def word_list(text: str) -> tuple[str, ...]:
    """Comma-separated words, trimmed, blanks and repeats dropped."""
    return tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))


def own_sets(reserved: tuple[str, ...]) -> list[TokenSet]:
    """The open session's sets other than the `reserved` names; none without a session."""
    sid = session_panel.current_session_id()
    if sid is None:
        return []
    return [s for s in list_token_sets(resources.store(), sid) if s.name not in reserved]


def word_set(engine: Engine, token_set: TokenSet,
             spellings: dict[str, bool]) -> prefill.WordSet | None:
    """A set's words resolved with this model's tokenizer (None if none is usable).

    Members added from the token view are words too (their token's text), so P(set) is
    always the probability of the set's words.
    """
    try:
        found = prefill.resolve_set(engine.tokenizer, token_set.words, token_set.name,
                                    **spellings, strict=False)
    except PerplexError:
        return None
    return found if found.spellings else None


def own_sets_editor(engine: Engine, prefix: str, reserved: tuple[str, ...],
                    spellings: dict[str, bool]) -> tuple[prefill.WordSet, ...]:
    """List, add and delete the researcher's sets; returns those usable with this model."""
    locked = session_panel.read_only()
    st.markdown("**Your own sets**")
    mine = own_sets(reserved)
    sets = {s.name: word_set(engine, s, spellings) for s in mine}
    if mine:
        st.dataframe(pd.DataFrame(
            [{"set": s.name, "words": ", ".join(visible_token(w) for w in s.words),
              "spellings counted": len(sets[s.name].counted) if sets[s.name] else 0}
             for s in mine]), hide_index=True)
    else:
        st.caption("None yet. Add one here, or from a token's menu in the token view "
                   "(Add to token set → New set…).")
    with st.form(f"{prefix}.own_form", clear_on_submit=True):
        cols = st.columns([1, 3])
        name = cols[0].text_input("New set", placeholder="e.g. Harm", disabled=locked,
                                  key=f"{prefix}.own_name")
        words = cols[1].text_input("its words (comma separated)", disabled=locked,
                                   placeholder="kill, weapon, poison", key=f"{prefix}.own_words")
        if st.form_submit_button("Add set", disabled=locked):
            _add(engine, name, words, reserved, spellings)
    if mine and not locked:
        cols = st.columns([3, 1], vertical_alignment="bottom")
        gone = cols[0].selectbox("Delete a set", [s.name for s in mine], index=None,
                                 key=f"{prefix}.own_delete_pick", placeholder="choose a set")
        if cols[1].button("Delete", key=f"{prefix}.own_delete", disabled=gone is None):
            delete_token_set(resources.store(), next(s.id for s in mine if s.name == gone))
            st.rerun()
    return tuple(found for found in sets.values() if found is not None)


def _add(engine: Engine, name: str, words: str, reserved: tuple[str, ...],
         spellings: dict[str, bool]) -> None:
    """Create a set from the form (its words checked first); shows what was wrong."""
    if name.strip().lower() in (r.lower() for r in reserved):
        st.error(f"{plain(name.strip())} is edited above; give your set another name.")
        return
    try:
        prefill.resolve_set(engine.tokenizer, word_list(words), name.strip() or "new set",
                            **spellings)
        store = resources.store()
        created = create_token_set(store, session_panel.session_for_saving(), name)
        add_words(store, created.id, engine.tokenizer, engine.info.label, word_list(words),
                  **spellings)
    except PerplexError as exc:
        st.error(f"{plain(str(exc))} Nothing was added.")
        return
    st.rerun()
