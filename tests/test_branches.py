"""Tests for branch trees: parent chains, children with branch positions, odd links."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from perplex.core.errors import StoreError
from perplex.workspace.branches import branch_tree
from perplex.workspace.store import Store
from tests.hand_records import make_generation

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "perplex.duckdb") as opened:
        for session_id in "stc":  # the sessions the generations below go into
            opened.ensure_session(session_id, session_id)
        yield opened


def save(store, title, minute, parent=None, position=None, session_id="s"):
    gen = make_generation(n_steps=6, n_alts=2, title=title, session_id=session_id,
                          parent_id=parent.id if parent else parent, branch_position=position,
                          created_at=T0 + timedelta(minutes=minute))
    store.save_generation(gen)
    return gen


def test_tree_from_any_node(store):
    root = save(store, "root", 0)
    a = save(store, "a", 1, root, 3)
    b = save(store, "b", 2, root, 5)
    a1 = save(store, "a1", 3, a, 4)
    save(store, "unrelated", 4)
    save(store, "other session", 5, session_id="t")

    tree = branch_tree(store, a.id)
    assert tree.root.id == root.id and tree.path == (root.id, a.id)
    assert tree.focus.id == a.id and tree.focus.n_tokens == 6
    assert [n.id for n in tree.parent_chain] == [root.id]
    assert [(c.id, c.branch_position) for c in tree.children] == [(a1.id, 4)]
    assert [(c.title, c.branch_position) for c in tree.root.children] == [("a", 3), ("b", 5)]
    assert [n.title for n in tree.nodes()] == ["root", "a", "a1", "b"]
    assert tree.find(b.id).parent_id == root.id and tree.find("nope") is None

    leaf = branch_tree(store, a1.id)
    assert [n.title for n in leaf.parent_chain] == ["root", "a"] and leaf.children == ()
    assert branch_tree(store, root.id).parent_chain == ()
    assert [n.title for n in branch_tree(store, b.id).nodes()] == ["root", "a", "a1", "b"]


def test_deleted_parent_and_cycles(store):
    root = save(store, "root", 0)
    child = save(store, "child", 1, root, 2)
    grandchild = save(store, "grandchild", 2, child, 3)
    store.delete_generation(child.id)
    tree = branch_tree(store, grandchild.id)
    assert tree.root.id == grandchild.id and tree.root.parent_id == child.id
    assert branch_tree(store, root.id).children == ()
    # corrupt links (a cycle) must not hang or recurse forever
    x = make_generation(n_steps=2, n_alts=1, session_id="c", parent_id="y-id", id="x-id")
    y = make_generation(n_steps=2, n_alts=1, session_id="c", parent_id="x-id", id="y-id")
    store.save_generation(x)
    store.save_generation(y)
    tree = branch_tree(store, "x-id")
    assert set(tree.path) == {"x-id", "y-id"} and len(list(tree.nodes())) == 2


def test_long_chain_and_missing_generation(store):
    parent = save(store, "g0", 0)
    for i in range(1, 25):
        parent = save(store, f"g{i}", i, parent, 1)
    tree = branch_tree(store, parent.id)
    assert len(tree.path) == 25 and len(tree.parent_chain) == 24
    with pytest.raises(StoreError, match="No generation"):
        branch_tree(store, "missing")
