"""Branch trees: how a generation relates to the ones it was branched from and into.

An injected or branched continuation is stored as a generation whose `parent_id` names the
generation it departs from and whose `branch_position` is the index of the first token
that differs. This module reads those links back as a tree for the branch navigator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from perplex.core.errors import StoreError
from perplex.workspace.access import require_row
from perplex.workspace.rows import from_epoch_us
from perplex.workspace.store import Store


@dataclass(frozen=True)
class BranchNode:
    """One generation in a branch tree, with its branches (oldest first)."""

    id: str
    title: str
    parent_id: str | None  # may name a generation that has since been deleted
    branch_position: int | None  # index of the first token where it departs from its parent
    created_at: datetime
    n_tokens: int
    children: tuple[BranchNode, ...]


@dataclass(frozen=True)
class BranchTree:
    """The whole tree a generation belongs to, and the path from its root to that one."""

    root: BranchNode
    path: tuple[str, ...]  # generation ids from the root to the focus, both included

    @property
    def focus(self) -> BranchNode:
        """The generation the tree was asked for."""
        node = self.root
        for generation_id in self.path[1:]:
            node = next(child for child in node.children if child.id == generation_id)
        return node

    @property
    def parent_chain(self) -> tuple[BranchNode, ...]:
        """The focus's ancestors, root first (empty for a root)."""
        chain, node = [self.root], self.root
        for generation_id in self.path[1:]:
            node = next(child for child in node.children if child.id == generation_id)
            chain.append(node)
        return tuple(chain[:-1])

    @property
    def children(self) -> tuple[BranchNode, ...]:
        """The focus's direct branches, each with its branch position."""
        return self.focus.children

    def nodes(self) -> Iterator[BranchNode]:
        """Every node, depth first, parents before children."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def find(self, generation_id: str) -> BranchNode | None:
        """The node of a generation in this tree, or None."""
        return next((n for n in self.nodes() if n.id == generation_id), None)


def branch_tree(store: Store, generation_id: str) -> BranchTree:
    """The branch tree of a generation, among the generations of its session.

    The root is the oldest ancestor still stored; a parent link to a deleted generation (or
    one in another session) ends the chain there.
    """
    with store.cursor() as cur:
        found = cur.execute("SELECT session_id FROM generations WHERE id = ?",
                            [generation_id]).fetchall()
        if not found:
            raise StoreError(f"No generation with id {generation_id!r}: it may have been "
                             "deleted (perhaps with its session, in another tab).")
        require_row(cur, store.actor, "generations", generation_id)
        rows = cur.execute(
            "SELECT g.id, g.title, g.parent_id, g.branch_position, epoch_us(g.created_at), "
            "(SELECT count(*) FROM token_steps t WHERE t.generation_id = g.id) "
            "FROM generations g WHERE g.session_id IS NOT DISTINCT FROM ? "
            "ORDER BY g.created_at, g.id", [found[0][0]]).fetchall()
    info = {row[0]: row for row in rows}
    path = [generation_id]
    while (parent := info[path[-1]][2]) in info and parent not in path:
        path.append(parent)
    path.reverse()
    children: dict[str, list[str]] = {}
    for row in rows:
        if row[2] in info and row[0] != path[0]:
            children.setdefault(row[2], []).append(row[0])
    return BranchTree(root=_build(path[0], info, children), path=tuple(path))


def _build(root_id: str, info: dict[str, tuple], children: dict[str, list[str]]) -> BranchNode:
    """Build the subtree under `root_id` without recursion (chains can be long)."""
    order, seen, stack = [], {root_id}, [root_id]
    while stack:  # parents before children; `seen` stops any cycle in corrupt links
        node_id = stack.pop()
        order.append(node_id)
        for child in children.get(node_id, []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    built: dict[str, BranchNode] = {}
    for node_id in reversed(order):
        gen_id, title, parent_id, branch_position, created_us, n_tokens = info[node_id]
        kids = tuple(built[c] for c in children.get(node_id, []) if c in built)
        built[node_id] = BranchNode(gen_id, title, parent_id, branch_position,
                                    from_epoch_us(created_us), n_tokens, kids)
    return built[root_id]
