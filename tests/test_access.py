"""Ownership on a shared server, enforced in the data modules (not only in the pages).

Alice owns a session; Bob holds a read-only share link to it; Carol has nothing. Each test
is named after what a hostile or careless colleague tried, and each write goes through the
same function the page calls.
"""

from __future__ import annotations

import pytest

from perplex.core.calibration import Dataset, Item
from perplex.core.errors import StoreError
from perplex.core.records import DecodeParams
from perplex.workspace.access import AccessError, Actor
from perplex.workspace.annotations import add_annotation, list_annotations
from perplex.workspace.batch_store import add_items, create_batch, list_batches, load_batch
from perplex.workspace.branches import branch_tree
from perplex.workspace.bundles import export_bundle, import_bundle
from perplex.workspace.calibration_store import (
    create_run,
    list_datasets,
    list_runs,
    load_dataset,
    save_dataset,
)
from perplex.workspace.sessions import (
    create_session,
    delete_session,
    duplicate_session,
    get_session,
    may_change,
    rename_session,
    search_sessions,
    update_settings,
)
from perplex.workspace.sharing import (
    create_share_link,
    revoke_share_link,
    share_links,
    shared_session,
)
from perplex.workspace.store import Store
from perplex.workspace.token_sets import add_token, create_token_set, list_token_sets
from perplex.workspace.trait_store import save_vector
from tests.hand_records import make_generation


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "team.duckdb") as opened:
        yield opened


@pytest.fixture
def team(store):
    """Alice's session with a generation, a note and a token set; Bob's link; Carol."""
    alice = store.acting_as(Actor("alice"))
    session = create_session(alice, "alice's findings")
    gen = make_generation(n_steps=6, session_id=session.id)
    alice.save_generation(gen)
    add_annotation(alice, gen.id, 1, "suspicious token")
    token_set = create_token_set(alice, session.id, "R-Set")
    link = create_share_link(alice, session.id)
    bob = store.acting_as(Actor("bob", frozenset({link.token})))
    carol = store.acting_as(Actor("carol"))
    return alice, bob, carol, session, gen, token_set, link


def test_share_links_are_unguessable_tokens_of_at_least_128_bits(team):
    alice, *_, session, _, _, link = team
    assert len(link.token) == 32  # token_urlsafe(24): 192 random bits
    others = {create_share_link(alice, session.id).token for _ in range(50)}
    assert len(others) == 50 and link.token not in others
    with pytest.raises(StoreError, match="not valid"):
        shared_session(alice, "x" * 31)
    with pytest.raises(StoreError, match="revoked"):
        shared_session(alice, "A" * 32)  # well formed, never issued
    assert shared_session(alice, link.token) == session.id


def test_c_sees_nothing_of_a_by_any_id(team):
    _, _, carol, session, gen, token_set, _ = team
    assert search_sessions(carol, "") == []
    assert carol.list_sessions() == []
    assert carol.list_generations() == []
    for read in (lambda: get_session(carol, session.id),
                 lambda: carol.load_generation(gen.id),
                 lambda: carol.list_generations(session.id),
                 lambda: list_annotations(carol, gen.id),
                 lambda: list_token_sets(carol, session.id),
                 lambda: export_bundle(carol, session.id),
                 lambda: duplicate_session(carol, session.id),
                 lambda: branch_tree(carol, gen.id)):
        with pytest.raises(StoreError, match="that you can open"):
            read()


def test_unknown_and_foreign_session_ids_read_the_same(team):
    """An id gives nothing away: someone else's session and no session get one message."""
    _, _, carol, session, *_ = team
    with pytest.raises(StoreError) as foreign:
        get_session(carol, session.id)
    with pytest.raises(StoreError) as unknown:
        get_session(carol, "0123456789abcdef")
    assert str(foreign.value).replace(session.id, "ID") == \
        str(unknown.value).replace("0123456789abcdef", "ID")


def test_a_read_only_link_stays_read_only_whatever_the_viewer_calls(team):
    alice, bob, _, session, gen, token_set, _ = team
    assert get_session(bob, session.id).name == "alice's findings"
    assert bob.load_generation(gen.id) == gen
    assert [s.id for s in search_sessions(bob, "")] == [session.id]
    assert not may_change(bob, get_session(bob, session.id))
    upload = make_generation(n_steps=4, session_id=session.id)
    writes = {
        "chat or upload into it": lambda: bob.save_generation(upload),
        "overwrite a generation": lambda: bob.save_generation(gen),
        "rename it": lambda: rename_session(bob, session.id, "mine now"),
        "change its settings": lambda: update_settings(bob, session.id, {"mode": "x"}),
        "annotate it": lambda: add_annotation(bob, gen.id, 2, "bob was here"),
        "make a token set": lambda: create_token_set(bob, session.id, "C-Set"),
        "change a token set": lambda: add_token(bob, token_set.id, "tok", 5, "x"),
        "delete a generation": lambda: bob.delete_generation(gen.id),
        "delete the session": lambda: delete_session(bob, session.id),
        "share it further": lambda: create_share_link(bob, session.id),
        "start a batch in it": lambda: create_batch(bob, "b", "prompts", "m", {}, session.id),
        "import a .pt trait vector into it": lambda: save_vector(bob, _pt_vector(), session.id),
    }
    for what, write in writes.items():
        with pytest.raises(AccessError, match="read-only"):
            write()
    # nothing changed: Alice still sees exactly what she had
    assert get_session(alice, session.id).name == "alice's findings"
    assert [g.id for g in alice.list_generations(session.id)] == [gen.id]
    assert [a.text for a in list_annotations(alice, gen.id)] == ["suspicious token"]
    assert [s.name for s in list_token_sets(alice, session.id)] == ["R-Set"]


def _pt_vector():
    """A persona_vectors .pt file as the Persona Traits page imports it."""
    import io

    import torch

    from perplex.workspace.trait_store import import_pt

    data = io.BytesIO()
    torch.save(torch.ones(4, 8), data)
    return import_pt(data.getvalue(), "evil", "m", layers=3, hidden=8)


def test_a_viewer_forks_a_copy_that_is_theirs(team):
    alice, bob, carol, session, gen, *_ = team
    fork = duplicate_session(bob, session.id)
    assert fork.owner == "bob" and may_change(bob, fork)
    rename_session(bob, fork.id, "bob's fork")
    bob.save_generation(make_generation(n_steps=4, session_id=fork.id))
    assert {s.id for s in search_sessions(alice, "")} == {session.id}
    assert search_sessions(carol, "") == []


def test_revoking_a_link_ends_the_viewers_access(team):
    alice, bob, _, session, gen, _, link = team
    assert revoke_share_link(alice, link.token) is True
    assert revoke_share_link(alice, link.token) is False
    with pytest.raises(StoreError, match="revoked"):
        shared_session(bob, link.token)
    with pytest.raises(StoreError, match="that you can open"):
        get_session(bob, session.id)
    with pytest.raises(StoreError, match="that you can open"):
        bob.load_generation(gen.id)
    assert search_sessions(bob, "") == []
    assert [(x.token, x.revoked_at is not None) for x in share_links(alice, session.id)] == \
        [(link.token, True)]


def test_only_the_owner_lists_and_revokes_links(team):
    _, bob, carol, session, _, _, link = team
    for who in (bob, carol):
        with pytest.raises(StoreError):
            share_links(who, session.id)
        with pytest.raises(StoreError):
            revoke_share_link(who, link.token)


def test_an_imported_bundle_belongs_to_whoever_imported_it(team):
    alice, _, carol, session, *_ = team
    imported = import_bundle(carol, export_bundle(alice, session.id))
    assert imported.owner == "carol"
    assert [s.id for s in search_sessions(carol, "")] == [imported.id]
    assert imported.id not in {s.id for s in search_sessions(alice, "")} - {session.id}


def test_batches_and_calibration_data_are_their_owners(team, store):
    alice, bob, carol, session, *_ = team
    batch = create_batch(alice, "alice's batch", "prompts", "m", {}, session.id)
    add_items(alice, batch, [])  # listed once read
    assert [b.id for b in list_batches(alice)] == [batch]
    assert list_batches(carol) == []
    with pytest.raises(StoreError, match="that you can open"):
        load_batch(carol, batch)
    dataset = Dataset("alice's questions", (Item("q1", "2+2?", ("4",)),))
    save_dataset(alice, dataset)
    run = create_run(alice, dataset.id, "m", {"max_new_tokens": DecodeParams().max_new_tokens})
    assert [d[0] for d in list_datasets(alice)] == [dataset.id]
    assert list_datasets(carol) == [] and list_runs(carol) == []
    assert [r.id for r in list_runs(alice)] == [run]
    for attempt in (lambda: load_dataset(carol, dataset.id),
                    lambda: create_run(carol, dataset.id, "m", {}),
                    lambda: save_dataset(carol, dataset)):
        with pytest.raises(StoreError, match="that you can open"):
            attempt()


def test_the_local_user_keeps_every_right(store):
    """A local install has one user, who owns every session as before."""
    session = create_session(store, "local")
    assert session.owner is None and may_change(store, session)
    store.save_generation(make_generation(n_steps=4, session_id=session.id))
    assert rename_session(store, session.id, "renamed").name == "renamed"
    assert delete_session(store, session.id) is True


def test_a_batch_over_the_servers_item_limit_is_refused_and_stores_nothing(team):
    import io

    from perplex.core.limits import LimitReached
    from perplex.modes.batch.inputs import read_items
    from perplex.workspace.batch_store import add_items

    alice, *_, session, _, _, _ = team
    batch = create_batch(alice, "too big", "prompts", "m", {}, session.id)
    lines = "".join(f"question {i}\n" for i in range(5)).encode()
    with pytest.raises(LimitReached, match="allows 3 per batch"):
        add_items(alice, batch, read_items("p.txt", io.BytesIO(lines)), max_items=3)
    assert list_batches(alice) == []
    kept = create_batch(alice, "fits", "prompts", "m", {}, session.id)
    assert add_items(alice, kept, read_items("p.txt", io.BytesIO(lines)), max_items=5) == (5, 0)


def test_each_user_opens_the_calibration_samples_as_their_own(tmp_path):
    """Hardening issue, point 2: the sample had one fixed id, owned by the first user."""
    from perplex.modes.calibration.datasets import sample_dataset
    from perplex.workspace.calibration_store import (
        load_dataset,
        sample_dataset_id,
        save_dataset,
    )

    with Store.open(tmp_path / "db.duckdb") as store:
        users = [store.acting_as(Actor(name)) for name in ("alice", "bob")]
        sample = sample_dataset("trivia")
        ids = []
        for user in users:  # each opens the page in turn, and again
            for _ in range(2):
                wanted = sample_dataset_id("trivia", user)
                save_dataset(user, Dataset(sample.name, sample.items, id=wanted))
                assert load_dataset(user, wanted).items == sample.items
            ids.append(wanted)
        assert len(set(ids)) == 2 and sample_dataset_id("trivia", store) == "sample-trivia"
        with pytest.raises(StoreError):
            load_dataset(users[1], ids[0])  # and neither reads the other's copy
