"""Prefilling mode's view: the R-Set and C-Set editor, the first token, the answer.

P(set) at the first response token and where the answer's sentences start, after a prefix
the researcher forces; the many-prompts table is `prompt_list`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd
import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import short_prob, visible_token
from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.engine.protocol import Engine
from perplex.modes import prefill
from perplex.ui.components import investigate
from perplex.ui.components.live import LiveGeneration, kept
from perplex.ui.components.own_sets import own_sets_editor, word_list
from perplex.ui.components.transcript import show_transcript
from perplex.ui.shell import page_state, resources, session_panel
from perplex.ui.shell.session_settings import Spellings
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import count, plain
from perplex.workspace.token_sets import (
    COMPLIANCE_SET,
    REFUSAL_SET,
    list_token_sets,
    save_set_words,
    session_set_words,
)

PREFIX = "prefill"
CURRENT = page_state.current_key(PREFIX)
PROMPT = f"{PREFIX}.prompt"
PROMPT_TEXT = f"{PREFIX}.prompt_text"
PREFILL_TEXT = f"{PREFIX}.prefix_text"
OPEN_ROW = f"{PREFIX}.open_row_prompt"  # a prompt the many-prompt table asked to run
SET_NAMES = (REFUSAL_SET, COMPLIANCE_SET)


@dataclass(frozen=True)
class ActiveSets:
    """The R-Set and C-Set in effect: their words, spelling choices and resolved sets."""

    words: dict[str, tuple[str, ...]]
    spellings: dict[str, bool]
    sets: dict[str, prefill.WordSet]
    own: tuple[prefill.WordSet, ...]  # the researcher's other sets usable here


def saved_sets() -> tuple[dict[str, tuple[str, ...]], dict[str, bool]]:
    """The session's set words and spelling choices; the defaults, in memory, until saved.

    Only reads: opening the page creates no session and writes nothing.
    """
    words = session_set_words(resources.store(), session_panel.current_session_id())
    return words, asdict(session_panel.settings().spellings or Spellings())


def save_sets(local: Engine, words: dict[str, tuple[str, ...]], spellings: dict[str, bool]
              ) -> None:
    """Write the sets and spelling choices into the session (created on first use).

    The first save seeds the session's R-Set and C-Set, so the token view's "Add to token
    set" and this editor change the same sets from then on.
    """
    sid = session_panel.session_for_saving()
    store = resources.store()
    stored = {s.name: s for s in list_token_sets(store, sid)}
    respell = session_panel.settings().spellings != Spellings(**spellings)
    for name in SET_NAMES:
        held = stored.get(name)
        if held is None or set(held.words) != set(words[name]) or respell \
                or not held.token_ids(local.info.label):
            save_set_words(store, sid, name, words[name], local.tokenizer, local.info.label,
                           **spellings)
    if respell:
        session_panel.remember(spellings=Spellings(**spellings))


def synced(widget, label: str, key: str, saved, **kwargs):
    """A keyed widget that shows the saved value, and again whenever it changes elsewhere.

    Keyed widgets keep their own state, so a set changed from the token view (or a session
    switch) would otherwise leave the old words in the box, to be saved back.
    """
    mark = f"{key}.saved"
    if key not in st.session_state or st.session_state.get(mark) != saved:
        st.session_state[key] = saved
        st.session_state[mark] = saved
    return widget(label, key=key, **kwargs)


def resolved_table(resolved) -> pd.DataFrame:
    """One row per spelling: its tokens, their ids, and how the set counts it."""
    return pd.DataFrame(
        [{"word": r.word, "spelling": visible_token(r.text),
          "tokens": " + ".join(visible_token(t) if t else "(byte piece)"
                               for t in r.token_texts),
          "ids": ", ".join(str(i) for i in r.token_ids),
          "counted": counted(r, resolved)} for r in resolved]).set_index("word")


def counted(spelling, resolved) -> str:
    """How a spelling counts in P(set): whole, as a product of pieces, inside another, not."""
    if not spelling.counted:
        first = "a byte piece" if not spelling.token_texts[0] else "whitespace"
        return f"no: first token is {first}"
    within = prefill.inside(spelling.token_ids, [r.token_ids for r in resolved if r.counted])
    if within is not None:
        holder = next(r.text for r in resolved if r.token_ids == within)
        return f"inside “{visible_token(holder)}” (not added twice)"
    if spelling.multi_token:
        return f"yes: product of {len(spelling.token_ids)} tokens"
    return "yes"


def edit_sets(local: Engine) -> ActiveSets:
    """The sets editor; saves valid edits (creating the session) and returns the sets."""
    words, spellings = saved_sets()
    tag = session_panel.current_session_id() or "new"
    locked = session_panel.read_only()
    with st.expander("Token sets (R-Set, C-Set)", expanded=False):
        if locked:
            st.caption("Read-only (shared link): fork the session to edit its sets.")
        cols = st.columns(2)
        chosen = {
            "leading_space": synced(cols[0].toggle, "Also after a space (“ Sure” as well as "
                                    "“Sure”)", f"{PREFIX}.space.{tag}",
                                    spellings["leading_space"], disabled=locked),
            "case_variants": synced(cols[1].toggle, "Also in other cases (sure, Sure, SURE)",
                                    f"{PREFIX}.cases.{tag}", spellings["case_variants"],
                                    disabled=locked)}
        edited, errors = {}, {}
        for col, name in zip(cols, SET_NAMES):
            saved_text = ", ".join(words[name])
            text = synced(col.text_input, f"{name} words (comma separated)",
                          f"{PREFIX}.words.{name}.{tag}", saved_text, disabled=locked)
            # Untouched text is no edit, even where it would not parse back to the saved
            # words (" Sure" or "," added from the token view).
            if text != saved_text and set(word_list(text)) != set(words[name]):
                try:
                    prefill.resolve_set(local.tokenizer, word_list(text), name, **chosen)
                    edited[name] = word_list(text)
                except PerplexError as exc:
                    errors[name] = str(exc)
        if not locked and (edited or chosen != spellings):
            save_sets(local, {**words, **edited}, chosen)
            st.rerun()
        sets = {}
        for col, name in zip(cols, SET_NAMES):
            if name in errors:
                col.error(plain(f"{errors[name]} Not saved: {name} keeps its saved words "
                                "(below) until the box holds a valid list."))
            try:
                found = prefill.resolve_set(local.tokenizer, words[name], name, **spellings,
                                            strict=False)
            except PerplexError as exc:  # e.g. every token removed from the token view
                col.warning(plain(str(exc)))
                found = prefill.WordSet(name, (), ())
            if found.resolved:
                col.table(resolved_table(found.resolved))
            col.caption(f"{name}: {len(found.counted)} spellings counted.")
            sets[name] = found
        st.caption("· marks a space. P(set) is the probability of the set's words: a "
                   "spelling of several tokens counts with the product of its pieces' "
                   "conditional probabilities, and a spelling that a shorter one starts "
                   "(“ I'm” after “ I”) is already inside the shorter one's probability. "
                   "Tokens added from the token view's menu land in these sets too. Edits "
                   "are saved in the session.")
        own = own_sets_editor(local, PREFIX, SET_NAMES, spellings)
    return ActiveSets(words, spellings, sets, own)


def headline(result: prefill.FirstToken, label: str) -> None:
    """The first response token shown large, with P(R-Set), P(C-Set), other."""
    cols = st.columns([2, 1, 1, 1])
    shown = visible_token(result.top_text)
    cols[0].markdown(f"<div style='font-size:0.9rem;color:#666'>{plain(label)}</div>"
                     f"<div data-testid='first-token' style='font-size:2.6rem;"
                     f"font-family:monospace'>{plain(shown)}</div>"
                     f"<div style='color:#666'>p = {short_prob(result.top_probs[0])}</div>",
                     unsafe_allow_html=True)
    cols[1].metric("P(R-Set)", short_prob(result.mass.refusal))
    cols[2].metric("P(C-Set)", short_prob(result.mass.compliance))
    cols[3].metric("other", short_prob(result.mass.other))
    if result.own_sets:
        st.markdown("Your sets here: " + " · ".join(
            f"P({plain(name)}) = **{short_prob(mass)}**" for name, mass in result.own_sets))
    with st.expander("P per word at this position"):
        st.dataframe(word_table(result), hide_index=True, width="stretch")


def word_table(result: prefill.FirstToken) -> pd.DataFrame:
    """One row per counted spelling: its set, pieces and probability as a continuation."""
    return pd.DataFrame([
        {"set": w.set_name, "word": w.word, "spelling": visible_token(w.spelling),
         "tokens": " + ".join(visible_token(t) if t else "(byte piece)" for t in w.pieces),
         "P(word)": short_prob(w.prob),
         "in P(set)": f"inside “{visible_token(w.within)}”" if w.within else "added"}
        for w in result.words])


def run_prompt(local: Engine, params: DecodeParams, prompt: str, prefix_text: str,
               sets: ActiveSets, system: tuple[Message, ...]) -> None:
    """Generate an answer (starting with the prefix) and make it the page's current one."""
    view = LiveGeneration(key=f"{PREFIX}-live", confident=thresholds().confident,
                          uncertain=thresholds().uncertain, expected=params.max_new_tokens)
    run = local.generate(system + (Message("user", prompt),), params, prefill=prefix_text)
    st.session_state[PROMPT] = (prompt, prefix_text)
    shown = []
    with kept(run, lambda g: session_panel.save_to_session(g, CURRENT)):
        for step in run:
            if step.role is TokenRole.RESPONSE:
                shown.append(step)
                view.update(shown)
    session_panel.save_to_session(run.generation(), CURRENT)
    save_sets(local, sets.words, sets.spellings)  # the session now holds the sets it used
    st.rerun()


def open_row(prompt: str) -> None:
    """Button callback: put a table row's prompt in the form above and run it."""
    st.session_state[PROMPT_TEXT] = prompt
    st.session_state[PREFILL_TEXT] = ""
    st.session_state[OPEN_ROW] = prompt


@st.cache_data(max_entries=32, show_spinner=False)
def first_token(_engine, model: str, prompt: str, refusal: prefill.WordSet,
                compliance: prefill.WordSet,
                own: tuple[prefill.WordSet, ...],
                system: tuple[Message, ...]) -> prefill.FirstToken:
    """`prefill.first_token`, kept across reruns (a rerun for a click runs no model).

    `model` (the engine's spec) keys the cache: the engine itself is not hashed.
    """
    return prefill.first_token(_engine, prompt, refusal, compliance, own_sets=own, system=system)


@st.cache_data(max_entries=32, show_spinner=False)
def response_mass(_engine, model: str, _generation, generation_id: str,
                  refusal: prefill.WordSet,
                  compliance: prefill.WordSet) -> list[tuple[int, prefill.SetMass]]:
    """`prefill.response_mass`, kept across reruns; a saved generation never changes."""
    return prefill.response_mass(_engine, _generation, refusal, compliance)


def opening_panel(current, masses: dict[int, prefill.SetMass]) -> None:
    """With a forced opening: how likely it was, and the sets at the first free position."""
    opening = prefill.forced_opening(current)
    if opening is None:
        return
    shown = plain(visible_token(opening.text))
    cols = st.columns(4)
    cols[0].metric(f"P(the model opens with “{shown}”)", short_prob(opening.prob),
                   help=f"The product of the probabilities of its "
                        f"{count(opening.tokens, 'forced token')}, each given the prompt and "
                        "the forced tokens before it "
                        f"(log p = {opening.logprob:.3f}): how likely the model was to start "
                        "this way itself.")
    after = masses.get(opening.tokens)
    if after is None:
        return
    cols[1].metric("next word in R-Set", short_prob(after.refusal))
    cols[2].metric("next word in C-Set", short_prob(after.compliance))
    cols[3].metric("next word in neither", short_prob(after.other))
    st.caption(f"The last three are at the first free position, after “{shown}”: the "
               "probability that the model's own next word is one of the set's words. "
               "The forced tokens are left out of the answer's statistics below.")


def show_current(local: Engine, params: DecodeParams, current, sets: ActiveSets) -> None:
    """The first token, P(R-Set)/P(C-Set) along the answer, and the answer's token view."""
    refusal, compliance = sets.sets[REFUSAL_SET], sets.sets[COMPLIANCE_SET]
    user = [m.content for m in current.messages if m.role == "user"]
    try:
        if user:
            system = tuple(m for m in current.messages[:1] if m.role == "system")
            first = first_token(local, local.info.spec, user[-1], refusal, compliance, sets.own,
                                system)
            headline(first, "Most likely first response token")
            st.plotly_chart(prefill.first_token_figure(first, refusal, compliance),
                            key=f"{PREFIX}-bars", config={"displaylogo": False})
            st.caption("Red: an R-Set word · green: a C-Set word · grey: other (a token that "
                       "only starts a longer set word is grey: hover it). The top 20 of the "
                       "distribution at the first response position.")
        masses = response_mass(local, local.info.spec, current, current.id, refusal, compliance)
        opening_panel(current, dict(masses))
        series = [("", masses, "solid")]
        compare = investigate.parent_comparison(current)
        if compare is not None:
            parent = compare[0]
            series = [("before", response_mass(local, local.info.spec, parent, parent.id,
                                               refusal, compliance),
                       "dot"),
                      ("after", masses, "solid")]
        st.markdown("**P(R-Set) and P(C-Set) where the answer's sentences start**")
        st.caption("Evaluated at the answer's start, the first free position after a forced "
                   "opening, and after each . ! ? or line break: opening words mean something "
                   "there; mid-sentence, “I” or “Step” are just words.")
        st.plotly_chart(prefill.mass_timeline(series), key=f"{PREFIX}-mass",
                        config={"displaylogo": False})
    except PerplexError as exc:
        st.error(plain(str(exc)))
    event = show_transcript(current, PREFIX, thresholds(), extras=investigate.view_extras)
    investigate.comparison_panel(CURRENT)
    investigate.branch_navigator(CURRENT)
    investigate.act_on(event, current, CURRENT, local, params)
