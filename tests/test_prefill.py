"""Prefilling mode: P(set) against the model's own logits, batching, bad input, figures."""

from __future__ import annotations

import pytest
import torch

from perplex.core.errors import InputFormatError
from perplex.core.plots import short_prob
from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.engine.local.generation import start_generation
from perplex.engine.registry import local_engine
from perplex.modes import prefill
from perplex.modes.runner import Finished, JobItems, run_items
from perplex.workspace.jobs import create_job, item_records
from perplex.workspace.sessions import create_session
from perplex.workspace.store import Store
from perplex.workspace.token_sets import DEFAULT_SETS
from tests.tolerances import FLOAT32_PROB


def direct_probs(lm, ids):
    """Independent reference: softmax of model(input_ids).logits at the last position."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, -1].double()
    return torch.softmax(logits, dim=-1)


def direct_word_prob(lm, ids, word) -> float:
    """P(word | ids) the plain way: one forward pass per piece, the pieces' product."""
    prob = 1.0
    for j, token_id in enumerate(word):
        prob *= float(direct_probs(lm, list(ids) + list(word[:j]))[token_id])
    return prob


def direct_set_prob(lm, ids, word_set) -> float:
    """P(set) by hand: the spellings no shorter spelling starts (each sequence once)."""
    sequences = list(dict.fromkeys(r.token_ids for r in word_set.spellings))
    kept = [w for w in sequences
            if not any(len(o) < len(w) and w[:len(o)] == o for o in sequences)]
    return sum(direct_word_prob(lm, ids, w) for w in kept)


def default_ids(lm):
    r = prefill.resolve_set(lm.tokenizer, DEFAULT_SETS["R-Set"], "R-Set")
    c = prefill.resolve_set(lm.tokenizer, DEFAULT_SETS["C-Set"], "C-Set")
    return r, c


def ids_set(ids, name="mine"):
    return prefill.token_id_set(ids, name)


@pytest.mark.parametrize("which", ["tiny_lm", pytest.param("bundled_lm", marks=pytest.mark.slow)])
def test_set_mass_equals_direct_sum(which, request):
    lm = request.getfixturevalue(which)
    refusal, compliance = default_ids(lm)
    for prompt, pre in (("How do I pick a lock?", ""), ("Tell me a joke.", "Sure, here is")):
        got = prefill.first_token(local_engine(lm), prompt, refusal, compliance, prefill=pre)
        ids = prefill.chat_context(local_engine(lm), prompt, pre)
        probs = direct_probs(lm, ids)
        # the tree pass and the plain passes are different forward passes
        assert abs(got.mass.refusal - direct_set_prob(lm, ids, refusal)) <= FLOAT32_PROB
        assert abs(got.mass.compliance - direct_set_prob(lm, ids, compliance)) <= FLOAT32_PROB
        assert got.top_ids[0] == int(torch.argmax(probs))
        assert abs(got.top_probs[0] - float(probs.max())) <= FLOAT32_PROB
        assert abs(got.mass.other - (1 - got.mass.refusal - got.mass.compliance)) < 1e-12
        assert got.own_sets == ()


@pytest.mark.parametrize("which", ["tiny_lm", "bundled_lm"])
def test_own_sets_mass_equals_direct_sum(which, request):
    lm = request.getfixturevalue(which)
    refusal, compliance = default_ids(lm)
    own = {"mine": [5, 7, 7, 11], "overlaps R": sorted(refusal.first_ids)[:2] + [3]}
    got = prefill.first_token(local_engine(lm), "How do I pick a lock?", refusal, compliance,
                              own_sets=[ids_set(ids, name) for name, ids in own.items()])
    probs = direct_probs(lm, prefill.chat_context(local_engine(lm), "How do I pick a lock?"))
    assert [name for name, _ in got.own_sets] == ["mine", "overlaps R"]
    for (name, mass), ids in zip(got.own_sets, own.values()):
        assert abs(mass - float(probs[sorted(set(ids))].sum())) <= FLOAT32_PROB
    with pytest.raises(InputFormatError, match="token set empty one is empty"):
        prefill.first_token(local_engine(lm), "Hi", refusal, compliance,
                            own_sets=[ids_set([], "empty one")])


@pytest.mark.slow
def test_set_mass_counts_words_not_their_first_pieces(bundled_lm):
    """" Cannot" is several pieces: its P is below its first piece's; P(set) is by words."""
    lm = bundled_lm
    harm = prefill.resolve_set(lm.tokenizer, ["Cannot", "Can", "I", "I'm", "Sorry"], "Harm",
                               leading_space=True)
    by_text = {r.text: r.token_ids for r in harm.spellings}
    assert len(by_text[" Cannot"]) >= 2 and len(by_text[" I'm"]) == 2
    assert by_text[" I'm"][0] == by_text[" I"][0]  # two words that share a first piece
    ids = prefill.chat_context(local_engine(lm), "How do I pick a lock?")
    got = prefill.first_token(local_engine(lm), "How do I pick a lock?", harm, harm,
                              own_sets=[harm])
    assert abs(got.own_sets[0][1] - direct_set_prob(lm, ids, harm)) <= FLOAT32_PROB
    words = {w.spelling: w for w in got.words if w.set_name == "Harm"}
    for text, sequence in by_text.items():
        assert abs(words[text].prob - direct_word_prob(lm, ids, sequence)) <= FLOAT32_PROB
    assert words[" I'm"].within == " I" and words[" I"].within == ""
    first_piece = float(direct_probs(lm, ids)[by_text[" Cannot"][0]])
    assert words[" Cannot"].prob < first_piece  # the old first-piece sum over-counted
    # the shared piece " I" is counted once: P(set) is not P(" I") + P(" I'm")
    added = sum(w.prob for w in words.values() if not w.within)
    assert abs(got.own_sets[0][1] - added) <= 1e-12


def test_batched_equals_one_at_a_time(tiny_lm):
    refusal, compliance = default_ids(tiny_lm)
    prompts = ["Hi", "The capital of France is a long sentence here?", "Sure", "I'm sorry"]
    seen = []
    batch = prefill.first_tokens(local_engine(tiny_lm), prompts, refusal, compliance, batch_size=3,
                                 progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 4), (4, 4)]
    for prompt, got in zip(prompts, batch):
        alone = prefill.first_token(local_engine(tiny_lm), prompt, refusal, compliance)
        assert got.prompt == prompt
        assert abs(got.mass.refusal - alone.mass.refusal) <= FLOAT32_PROB
        assert abs(got.mass.compliance - alone.mass.compliance) <= FLOAT32_PROB
        assert got.top_ids[0] == alone.top_ids[0]


@pytest.mark.slow
def test_prompt_list_skips_blanks_and_handles_ten_thousand(tiny_lm):
    listed = prefill.parse_prompt_list("a\n\n  \nb\r\n")
    assert listed.prompts == ("a", "b") and listed.lines == (1, 4) and listed.blank_lines == 2
    with pytest.raises(InputFormatError, match="no prompts"):
        prefill.parse_prompt_list("\n \n")
    with pytest.raises(InputFormatError, match="at most 10,000"):
        prefill.parse_prompt_list("x\n" * 10_001)
    listed = prefill.parse_prompt_list("\n".join(f"q{i}" if i % 7 else "" for i in range(10_500)))
    assert len(listed.prompts) == 9000 and listed.blank_lines == 1500
    prompts = list(listed.prompts) + ["q"] * 1000
    calls = []
    refusal, compliance = default_ids(tiny_lm)
    results = prefill.first_tokens(local_engine(tiny_lm), prompts, refusal, compliance,
                                   batch_size=256,
                                   progress=lambda done, total: calls.append(done))
    assert len(results) == 10_000 and calls[-1] == 10_000 and len(calls) == 40
    assert all(0 <= r.mass.refusal <= 1 and 0 <= r.mass.compliance <= 1 for r in results)
    assert [r.prompt for r in results] == prompts


def test_a_list_scored_through_the_runner_stops_resumes_and_leaves_out_long_prompts(tiny_lm):
    """A list run a batch at a time equals one-at-a-time; too-long prompts are left out."""
    refusal, compliance = default_ids(tiny_lm)
    engine = local_engine(tiny_lm)
    too_long = "word " * tiny_lm.context_length
    text = "\n".join(["Hi there, a longer prompt", "", "Sure", too_long, "I'm sorry", "Ok?",
                      "The capital of France is"])
    listed = prefill.parse_prompt_list(text)
    store = Store.open()
    session = create_session(store, "lists")
    order = prefill.scoring_order(listed.prompts)
    assert sorted(order) == list(range(6)) and order[:2] == [4, 1]  # "Ok?", "Sure" first
    job = create_job(store, session.id, "prefill", "tiny", {},
                     [{"prompt": listed.prompts[i], "line": listed.lines[i]} for i in order])
    source = JobItems(store, job.id, prefill.first_token_json)

    def work(items):
        return [Finished(found) for found in prefill.score_prompts(
            engine, [i.item["prompt"] for i in items], refusal, compliance, k=3)]

    chunks = []
    first = run_items(source, work, chunk=2, should_stop=lambda: bool(chunks),
                      on_progress=chunks.append)
    assert first.stopped and (first.done, first.pending) == (2, 4)
    kept = {r.idx: r.result for r in item_records(store, job.id) if r.status == "done"}
    rest = run_items(source, work, chunk=prefill.batch_size)  # Resume: the pending ones
    assert not rest.stopped and (rest.done, rest.failed, rest.total) == (6, 0, 6)
    records = item_records(store, job.id)
    assert all(records[i].result == result for i, result in kept.items())
    long_ones = [r.item["line"] for r in records if r.result == {"too_long": True}]
    assert long_ones == [4]
    for record in records:
        got = prefill.first_token_from_json(record.item["prompt"], record.result)
        if got is None:
            continue
        alone = prefill.first_token(engine, record.item["prompt"], refusal, compliance, k=3)
        assert got.top_ids == alone.top_ids
        # a padded batch and a lone pass are two forward passes: float32 agreement
        assert abs(got.mass.refusal - alone.mass.refusal) <= FLOAT32_PROB
    assert prefill.batch_size(None) == 4
    assert prefill.batch_size(prefill.BATCH_SECONDS / 20) == 20
    assert prefill.batch_size(10.0) == prefill.MIN_PROMPTS_PER_BATCH
    assert prefill.batch_size(1e-6) == prefill.MAX_PROMPTS_PER_BATCH
    with pytest.raises(InputFormatError, match="longer than"):
        prefill.first_tokens(engine, ["Hi", too_long], refusal, compliance)
    with pytest.raises(InputFormatError, match="R-Set is empty"):
        prefill.score_prompts(engine, ["Hi"], ids_set([], "R-Set"), compliance)


def test_bad_sets_give_clear_messages(tiny_lm):
    with pytest.raises(InputFormatError, match="R-Set is empty"):
        prefill.first_token(local_engine(tiny_lm), "Hi", ids_set([], "R-Set"), ids_set([5]))
    with pytest.raises(InputFormatError, match="outside this model's vocabulary"):
        prefill.first_token(local_engine(tiny_lm), "Hi", ids_set([10**7]), ids_set([5]))
    with pytest.raises(InputFormatError, match="no words"):
        prefill.resolve_set(tiny_lm.tokenizer, ["", "  "], "C-Set")
    with pytest.raises(InputFormatError, match="prompt is empty"):
        prefill.first_token(local_engine(tiny_lm), "  ", ids_set([1]), ids_set([2]))


def test_unencodable_word():
    class NoUnicode:
        """A tokenizer stand-in that knows only ASCII, as some word-piece vocabularies do."""

        unk_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [0] if not text.isascii() else [ord(c) for c in text]}

        def convert_ids_to_tokens(self, ids):
            return [chr(i) if i else "[UNK]" for i in ids]

        def decode(self, ids, **_):
            return "".join(chr(i) if i else "[UNK]" for i in ids)

    tok = NoUnicode()
    with pytest.raises(InputFormatError, match="'🙂' in R-Set cannot be encoded"):
        prefill.resolve_set(tok, ["I", "🙂"], "R-Set", leading_space=False)


def test_multi_token_words_are_flagged(bundled_lm):
    found = prefill.resolve_set(bundled_lm.tokenizer, ["Cannot", "Sure"], "R")
    notes = [r.note for r in found.resolved if r.multi_token]
    assert found.counted and all(r.token_ids in found.sequences for r in found.spellings)
    assert notes and all("product of its pieces" in n or "whitespace" in n for n in notes)


@pytest.mark.parametrize("word, leading_space, why", [
    ("Über", True, "'Ü' is split into byte pieces"),  # both spellings start with a byte piece
    ("🙂", False, "'🙂' is split into byte pieces"),
    ("\u200b", True, "U\\+200B ZERO WIDTH SPACE.*no visible character"),
    ("\x07", True, "U\\+0007 control character.*no visible character"),
])
def test_words_the_bundled_tokenizer_cannot_encode(bundled_lm, word, leading_space, why):
    with pytest.raises(InputFormatError, match=why):
        prefill.resolve_set(bundled_lm.tokenizer, ["Sorry", word], "R-Set",
                            leading_space=leading_space)
    found = prefill.resolve_set(bundled_lm.tokenizer, ["Sorry", word], "R-Set",
                                leading_space=leading_space, strict=False)
    sorry = prefill.resolve_set(bundled_lm.tokenizer, ["Sorry"], "R-Set",
                                leading_space=leading_space)
    if word in ("Über", "🙂"):  # saved words are only left out, and the note says why
        assert found.sequences == sorry.sequences
        assert any("byte piece of a character" in (r.note or "") for r in found.resolved)


def test_a_spaced_spelling_can_rescue_a_word(bundled_lm):
    """'🙂' starts with a byte piece, but ' 🙂' is one whole token: the word is usable."""
    found = prefill.resolve_set(bundled_lm.tokenizer, ["🙂"], "C-Set")
    assert [r.text for r in found.spellings] == [" 🙂"] and len(found.sequences) == 1


def test_response_mass_matches_direct(tiny_lm):
    refusal, compliance = default_ids(tiny_lm)
    params = DecodeParams(max_new_tokens=6)
    gen = start_generation(tiny_lm, (Message("user", "Hello"),), params, prefill="Sure").run()
    masses = prefill.response_mass(local_engine(tiny_lm), gen, refusal, compliance)
    ids = [s.token_id for s in gen.steps]
    where = [i for i, s in enumerate(gen.steps) if s.role is TokenRole.RESPONSE]
    starts = prefill.sentence_starts([gen.steps[i].text for i in where],
                                     prefill.forced_opening(gen).tokens)
    assert [j for j, _ in masses] == starts and 0 in starts
    for j, m in masses:
        i = where[j]
        assert abs(m.refusal - direct_set_prob(tiny_lm, ids[:i], refusal)) <= FLOAT32_PROB
        assert abs(m.compliance - direct_set_prob(tiny_lm, ids[:i], compliance)) <= FLOAT32_PROB


def test_sets_are_read_where_sentences_start_not_mid_answer():
    """Numbers issue, point 4: the timeline spiked to 1.0 wherever the next word was "I"."""
    texts = ["Sure", ",", " here", " is", " step", " one", ".", " I", " think", " so", "!",
             "\n", "Step", " two", " I", " said"]
    assert prefill.sentence_starts(texts) == [0, 7, 11, 12]
    assert prefill.sentence_starts(texts, free_from=1) == [0, 1, 7, 11, 12]


def test_the_forced_opening_is_the_product_of_its_tokens_probabilities(tiny_lm):
    """Numbers issue, point 4: P(the model opens with the forced text) from direct logits."""
    import math

    import torch

    gen = start_generation(tiny_lm, (Message("user", "Hello"),), DecodeParams(max_new_tokens=4),
                           prefill="Sure thing").run()
    opening = prefill.forced_opening(gen)
    response = [s for s in gen.steps if s.role is TokenRole.RESPONSE]
    forced = [s for s in response if s.forced]
    assert opening.text == "Sure thing" and opening.tokens == len(forced) >= 2
    ids = [s.token_id for s in gen.steps]
    start = len(gen.steps) - len(response)
    with torch.no_grad():
        logits = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0].double()
    by_hand = sum(float(torch.log_softmax(logits[start + k - 1], -1)[ids[start + k]])
                  for k in range(len(forced)))
    assert opening.logprob == pytest.approx(by_hand, abs=1e-5)  # two passes: float32
    assert opening.prob == pytest.approx(math.exp(by_hand), rel=1e-5)
    unforced = start_generation(tiny_lm, (Message("user", "Hello"),),
                                DecodeParams(max_new_tokens=4)).run()
    assert prefill.forced_opening(unforced) is None


def test_forced_tokens_are_left_out_of_the_answers_statistics(tiny_lm):
    """Numbers issue, point 4: "least confident: 'Sure'" named a token the model never chose."""
    from perplex.core.stats import summarise

    gen = start_generation(tiny_lm, (Message("user", "Hello"),), DecodeParams(max_new_tokens=5),
                           prefill="Sure thing").run()
    response = [s for s in gen.steps if s.role is TokenRole.RESPONSE]
    summary = summarise(response, n_least=len(response))
    free = [s for s in response if not s.forced]
    assert summary.n_forced == len(response) - len(free) >= 2
    assert summary.n_scored == len(free)
    assert all(not response[i].forced for i in summary.least_confident)
    assert summary.min_prob == min(s.prob for s in free)


def test_figures_build(tiny_lm):
    refusal, compliance = default_ids(tiny_lm)
    result = prefill.first_token(local_engine(tiny_lm), "Hi", refusal, compliance, k=8)
    fig = prefill.first_token_figure(result, refusal, compliance)
    bar = fig.data[0]
    assert len(bar.x) == 8
    for token_id, colour in zip(result.top_ids, bar.marker.color):
        want = (prefill.REFUSAL_COLOUR if token_id in refusal.whole_ids
                else prefill.COMPLIANCE_COLOUR if token_id in compliance.whole_ids
                else prefill.OTHER_COLOUR)
        assert colour == want
    m = [(0, prefill.SetMass(0.7, 0.1)), (5, prefill.SetMass(0.2, 0.5))]
    fig = prefill.mass_timeline([("before", m, "dot"), ("after", m[:1], "solid")])
    assert len(fig.data) == 4 and list(fig.data[1].y) == [0.1, 0.5]
    assert list(fig.data[1].x) == [0, 5]


@pytest.fixture
def page(tiny_lm):
    """The Prefilling page on the tiny model (AppTest: script logic, no browser)."""
    from streamlit.testing.v1 import AppTest

    from perplex.core.settings import PROJECT_ROOT

    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "prefilling.py"), default_timeout=60)
    at.session_state["perplex.lm"] = tiny_lm
    return at


def stored(perplex_home):
    """(sessions, {set name: words} per session) in the page's database."""
    from perplex.workspace.sessions import search_sessions
    from perplex.workspace.store import Store
    from perplex.workspace.token_sets import list_token_sets

    with Store.open(perplex_home / "perplex.duckdb") as store:
        sessions = search_sessions(store, "")
        return sessions, [{s.name: s.words for s in list_token_sets(store, x.id)}
                          for x in sessions]


def test_opening_the_page_creates_nothing_until_an_edit(page, perplex_home, tiny_lm):
    page.run()
    assert not page.exception and not page.error
    assert page.text_input(key="prefill.words.R-Set.new").value == ", ".join(
        DEFAULT_SETS["R-Set"])
    page.run()  # a rerun (any widget) writes nothing either
    assert stored(perplex_home) == ([], [])
    page.text_input(key="prefill.words.R-Set.new").set_value("").run()  # bad edit: not saved
    assert "has no words" in page.error[0].value and "Not saved" in page.error[0].value
    assert stored(perplex_home) == ([], [])
    page.text_input(key="prefill.words.R-Set.new").set_value("Sorry, No, Sorry").run()
    assert not page.exception and not page.error
    sessions, sets = stored(perplex_home)
    assert len(sessions) == 1 and sets == [{"R-Set": ("Sorry", "No"),
                                            "C-Set": DEFAULT_SETS["C-Set"]}]
    sid = sessions[0].id
    assert page.text_input(key=f"prefill.words.R-Set.{sid}").value == "Sorry, No"
    assert sessions[0].settings["prefill.spellings"] == {"leading_space": True,
                                                         "case_variants": False}
    # tokens added from the token view (" maybe", ",") show up and are not "edited" away
    from perplex.workspace.store import Store
    from perplex.workspace.token_sets import add_token, list_token_sets

    with Store.open(perplex_home / "perplex.duckdb") as store:
        r_set = next(s for s in list_token_sets(store, sid) if s.name == "R-Set")
        add_token(store, r_set.id, tiny_lm.label, 5, " maybe")
        add_token(store, r_set.id, tiny_lm.label, 6, ",")
    page.run()
    assert not page.exception and not page.error
    assert page.text_input(key=f"prefill.words.R-Set.{sid}").value == "Sorry, No,  maybe, ,"
    assert stored(perplex_home)[1] == [{"R-Set": ("Sorry", "No", " maybe", ","),
                                        "C-Set": DEFAULT_SETS["C-Set"]}]


def test_a_shared_session_shows_its_sets_and_writes_nothing(page, perplex_home, tiny_lm):
    from perplex.workspace.sessions import create_session, get_session
    from perplex.workspace.store import Store
    from perplex.workspace.token_sets import save_set_words

    with Store.open(perplex_home / "perplex.duckdb") as store:
        sid = create_session(store, "shared").id
        save_set_words(store, sid, "C-Set", ["Yes"], tiny_lm.tokenizer, tiny_lm.label)
        before = get_session(store, sid).updated_at
    page.session_state["perplex.session_id"] = sid
    page.session_state["perplex.read_only"] = True
    page.run()
    assert not page.exception and not page.error
    field = page.text_input(key=f"prefill.words.C-Set.{sid}")
    assert field.value == "Yes" and field.disabled
    assert page.text_input(key=f"prefill.words.R-Set.{sid}").value == ", ".join(
        DEFAULT_SETS["R-Set"])
    sessions, sets = stored(perplex_home)
    assert sets == [{"C-Set": ("Yes",)}] and sessions[0].updated_at == before


def test_many_prompts_skip_blank_lines_and_a_row_opens_its_prompt(page, perplex_home):
    page.run()
    page.text_area(key="prefill.batch_text").set_value("Hi\n\n  \nI'm sorry\n")
    page.button[-1].click().run()  # the batch form's submit button is the last one
    assert not page.exception and not page.error
    captions = [c.value for c in page.caption]
    assert "2 of 2 prompts done." in captions and "2 blank lines skipped." in captions
    sessions, _ = stored(perplex_home)  # the list is kept in a session: a reload shows it
    assert len(sessions) == 1
    with Store.open(perplex_home / "perplex.duckdb") as store:
        records = item_records(store, page.session_state["prefill.list.job"])
    assert sorted(r.item["prompt"] for r in records) == ["Hi", "I'm sorry"]
    assert [r.item["line"] for r in sorted(records, key=lambda r: r.item["line"])] == [1, 4]
    assert all(r.status == "done" and r.result["top_ids"] for r in records)


def test_own_sets_are_added_shown_at_the_first_token_and_deleted(page, perplex_home, tiny_lm):
    page.run()
    add = next(b for b in page.button if b.label == "Add set")
    page.text_input(key="prefill.own_name").set_value("R-set")
    page.text_input(key="prefill.own_words").set_value("No")
    add.click().run()  # the R-Set's name, in other case: refused
    assert any("edited above" in e.value for e in page.error)
    assert stored(perplex_home) == ([], [])
    page.text_input(key="prefill.own_name").set_value("Harm")
    page.text_input(key="prefill.own_words").set_value("\u200b")
    next(b for b in page.button if b.label == "Add set").click().run()
    assert any("no visible character" in e.value and "Nothing was added" in e.value
               for e in page.error)
    assert stored(perplex_home) == ([], [])
    page.text_input(key="prefill.own_name").set_value("Harm")
    page.text_input(key="prefill.own_words").set_value("No, maybe")
    next(b for b in page.button if b.label == "Add set").click().run()
    assert not page.exception and not page.error
    assert stored(perplex_home)[1] == [{"Harm": ("No", "maybe")}]  # R/C stay unsaved
    page.text_area(key="prefill.prompt_text").set_value("Hi")
    next(b for b in page.button if b.label == "Run").click().run()
    assert not page.exception and not page.error
    shown = next(m.value for m in page.markdown if m.value.startswith("Your sets here"))
    direct = prefill.first_token(local_engine(tiny_lm), "Hi", *default_ids(tiny_lm), own_sets=[
        prefill.resolve_set(tiny_lm.tokenizer, ["No", "maybe"], "Harm")])
    assert shown == f"Your sets here: P(Harm) = **{short_prob(direct.own_sets[0][1])}**"
    page.selectbox(key="prefill.own_delete_pick").set_value("Harm").run()
    page.button(key="prefill.own_delete").click().run()
    assert not page.exception
    assert "Harm" not in stored(perplex_home)[1][0]
