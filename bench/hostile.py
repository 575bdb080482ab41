"""The load test's hostile user: heavy SQL flags, bomb files, writes through a read-only link.

`seed` puts into the database, before the server starts, what the hostile needs: a session
of its own with a finished batch (to write flags on) and, owned by another account that
never signs in, a session shared read-only (the link the hostile tries to write through).
`hostile` then repeats its four attacks through the browser, like any visitor would; each
must end in the app's own message for it. `unchanged` checks afterwards, in the database,
that none of them stored anything.
"""

from __future__ import annotations

import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from perplex.core.records import DecodeParams, Message
from perplex.modes.batch.flags import FlagSettings
from perplex.modes.batch.run import RunSettings, item_result
from perplex.workspace.access import Actor
from perplex.workspace.batch_store import (
    BatchInput,
    add_items,
    create_batch,
    custom_flags,
    finish_item,
    list_batches,
)
from perplex.workspace.sessions import create_session
from perplex.workspace.sharing import create_share_link
from perplex.workspace.store import Store
from tests.hand_records import make_generation

HOSTILE, OWNER = "hostile", "owner"
HEAVY_FLAGS = (  # the hardening issue's four kinds: memory, a cross join, recursion, a string
    "(SELECT len(range(1500000000))) > 0",
    "(SELECT sum(a.range * b.range) FROM range(3000000) a, range(3000000) b) > 0",
    "(WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT max(n) FROM r) > 0",
    "length(repeat('x', 2000000000)) > 0",
)
FLAG_REFUSED = re.compile("longer than 10 s|more memory than a flag may use")
UPLOAD_LIMIT = re.compile("allows \\d+ an hour")  # refusing the upload first is right too
TIMEOUT = 240_000  # ms: every user on the same two cores


@dataclass(frozen=True)
class Seeded:
    """What `seed` created: the ids the hostile aims at and what must stay as it is."""

    hostile_session: str
    batch_id: str
    batch_items: int
    shared_session: str
    share_token: str
    shared_generations: int


@dataclass
class Attacks:
    """What the hostile tried and how each ended."""

    tried: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def seed(path: Path) -> Seeded:
    """The hostile's session and batch, and the owner's shared session."""
    with Store.open(path) as store:
        hostile = store.acting_as(Actor(HOSTILE))
        session = create_session(hostile, "my batch")
        batch_id = create_batch(hostile, "five answers", "prompts", "hand",
                                RunSettings(DecodeParams()).to_json(), session.id)
        prompts = ("alpha", "beta", "gamma", "delta", "epsilon")
        add_items(hostile, batch_id, [BatchInput(i + 1, (Message("user", p),), ())
                                      for i, p in enumerate(prompts)])
        for idx in range(len(prompts)):
            finish_item(hostile, batch_id, idx, item_result(make_generation(12), (),
                                                            FlagSettings()))
        owner = store.acting_as(Actor(OWNER))
        shared = create_session(owner, "shared findings")
        owner.save_generation(make_generation(40, session_id=shared.id))
        link = create_share_link(owner, shared.id)
    return Seeded(session.id, batch_id, len(prompts), shared.id, link.token, 1)


def unchanged(path: Path, seeded: Seeded) -> list[str]:
    """What the hostile managed to change (nothing, when every refusal held)."""
    problems = []
    with Store.open(path) as store:
        hostile = store.acting_as(Actor(HOSTILE))
        batches = list_batches(hostile)
        if [(b.id, b.done) for b in batches] != [(seeded.batch_id, seeded.batch_items)]:
            problems.append(f"the hostile's batches changed: {batches}")
        if custom_flags(hostile, seeded.batch_id):
            problems.append("a heavy flag was stored")
        if [s.id for s in hostile.list_sessions()] != [seeded.hostile_session]:
            problems.append("a bomb bundle made a session")
        owner = store.acting_as(Actor(OWNER))
        kept = owner.list_generations(seeded.shared_session)
        if len(kept) != seeded.shared_generations:
            problems.append(f"the shared session holds {len(kept)} generations")
    return problems


def bomb_files(folder: Path) -> dict[str, Path]:
    """A zip bomb as a session bundle and a monitor file nested 100,000 deep."""
    bundle = folder / "bomb.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding", bytes(200_000_000))  # 200 MB of zeros, 200 kB zipped
    monitor = folder / "deep.json"
    monitor.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    return {"bundle": bundle, "monitor": monitor}


async def hostile(browser, url: str, sign_in, seeded: Seeded, files: dict[str, Path],
                  sample: Path, until: float, attacks: Attacks) -> None:
    """Repeat the attacks until `until`; each opens its own page and signs in again."""
    moves = (("heavy SQL flag", _heavy_flag), ("read-only link write", _read_only_write),
             ("zip bomb bundle", _bundle_bomb), ("deep monitor JSON", _monitor_bomb))
    turn = 0
    while time.monotonic() < until:
        name, move = moves[turn % len(moves)]
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(TIMEOUT)
        page = await context.new_page()
        attacks.tried[name] = attacks.tried.get(name, 0) + 1
        try:
            await move(page, url, sign_in, seeded, files, sample, turn // len(moves))
            if await page.locator('[data-testid="stException"]').count():
                raise AssertionError("a traceback on the page")
            attacks.refused[name] = attacks.refused.get(name, 0) + 1
        except Exception as exc:  # noted; the attacks go on
            attacks.failures.append(f"{name}: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:200]}")
        finally:
            await context.close()
        turn += 1


def _expander(page, title: str):
    return page.locator('[data-testid="stExpander"]').filter(
        has=page.locator("summary").filter(has_text=title))


async def _upload_in(page, title: str, file: Path) -> None:
    """Open the expander titled `title` and give its uploader `file`."""
    panel = _expander(page, title)
    await panel.locator("summary").click()
    await panel.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(file))


async def _says(page, pattern: re.Pattern) -> None:
    await page.get_by_text(pattern).first.wait_for(timeout=TIMEOUT)


async def _heavy_flag(page, url, sign_in, seeded, files, sample, round_) -> None:
    await sign_in(page, f"{url}/batch?session={seeded.hostile_session}", HOSTILE)
    panel = _expander(page, "Add a flag written in SQL")
    await panel.locator("summary").click()
    await panel.get_by_label("Name", exact=True).fill(f"heavy{round_}")
    await panel.get_by_label("Condition", exact=True).fill(
        HEAVY_FLAGS[round_ % len(HEAVY_FLAGS)])
    await panel.get_by_role("button", name="Add the flag").click()
    await _says(page, FLAG_REFUSED)


async def _read_only_write(page, url, sign_in, seeded, files, sample, round_) -> None:
    await sign_in(page, f"{url}/?share={seeded.share_token}", HOSTILE)
    await page.get_by_text("read-only (shared link)").first.wait_for(timeout=TIMEOUT)
    if not await page.locator('[data-testid="stChatInput"] textarea').is_disabled():
        raise AssertionError("the chat box takes input through a read-only link")
    await page.get_by_text("Open a transcript, an API response or a saved generation").click()
    await page.locator('[data-testid="stFileUploaderDropzoneInput"][accept*=".jsonl"]'
                       ).set_input_files(str(sample))
    await page.get_by_role("button", name=re.compile("^Score with")).click()
    await _says(page, re.compile("shared with you read-only: nothing was changed|"
                                 + UPLOAD_LIMIT.pattern))


async def _bundle_bomb(page, url, sign_in, seeded, files, sample, round_) -> None:
    await sign_in(page, f"{url}/?session={seeded.hostile_session}", HOSTILE)
    await _upload_in(page, "Export and import", files["bundle"])
    go = page.get_by_role("button", name="Import as a new session")
    limit = page.get_by_text(UPLOAD_LIMIT)
    await go.or_(limit).first.wait_for(timeout=TIMEOUT)
    if await limit.count():
        return
    await go.click()
    await _says(page, re.compile("would unpack to more than"))


async def _monitor_bomb(page, url, sign_in, seeded, files, sample, round_) -> None:
    await sign_in(page, f"{url}/persona_traits", HOSTILE)
    await _upload_in(page, "Open per-token trait-monitor JSON", files["monitor"])
    await _says(page, re.compile("This monitor file cannot be used|" + UPLOAD_LIMIT.pattern))
