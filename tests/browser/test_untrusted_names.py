"""Names and texts people type or upload are shown as text, on every page that shows them.

Hardening issue, point 5: a trait named `![x](http://127.0.0.1:PORT/pixel.png)` made the
browser fetch the pixel, and names with links became links in Plotly titles. Here a
markdown image, a markdown link, an HTML image and an HTML link are put in every name a
session holds (the session, a generation and its branch, an annotation, a token set, a
batch, a model label), in an uploaded monitor file's trait name and tokens, a dataset's
column and a transcript's role (a flag's name is refused: flags are named with words).
The pages that show them are opened with a pixel server listening: nothing may reach it,
no element may point at it, and the payload is on screen as the characters typed.
"""

from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from perplex.core.errors import InputFormatError
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole, TokenStep
from perplex.modes.batch.run import RunSettings
from perplex.ui.shell.page_state import current_key
from perplex.workspace.annotations import add_annotation
from perplex.workspace.batch_store import add_custom_flag, add_items, create_batch
from perplex.workspace.sessions import create_session, update_settings
from perplex.workspace.store import Store
from perplex.workspace.token_sets import add_token, create_token_set
from tests.browser.conftest import REPO_ROOT, VIEWPORT, wait_for_script

LOAD_TIMEOUT = 180_000  # ms: the first page loads the bundled model


class _Pixel(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

    def log_message(self, *args):
        pass


@pytest.fixture
def pixel():
    """A server that records every request; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pixel)
    _Pixel.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def payload(base: str, what: str) -> str:
    """Markdown and HTML that would fetch or link `base` if rendered as markup."""
    return (f"{what} ![i]({base}/m) [l]({base}/l) <img src={base}/h> <a href={base}/a>a</a> "
            "<b>b</b>")


def _step(i: int, text: str, role: TokenRole, index: int, prob: float | None) -> TokenStep:
    return TokenStep(position=i, token_id=i + 1, text=text, role=role, message_index=index,
                     prob=prob, logprob=None if prob is None else math.log(prob), entropy=None
                     if prob is None else 0.5, rank=None if prob is None else 1)


def _seed(base: str) -> tuple[str, str]:
    """A session whose every name carries the payload; (session id, branch id)."""
    with Store.open() as store:
        session = create_session(store, payload(base, "session"))
        words = [payload(base, "token"), " and", " more", " words"]
        steps = (_step(0, "Hi", TokenRole.PROMPT, 0, None),
                 *(_step(i + 1, w, TokenRole.RESPONSE, 1, 0.4) for i, w in enumerate(words)))
        messages = (Message("user", "Hi"), Message("assistant", "".join(words)))
        root = Generation(steps=steps, messages=messages, model_label=payload(base, "model"),
                          source=Source.IMPORTED, session_id=session.id,
                          title=payload(base, "title"))
        branch = Generation(steps=steps, messages=messages, model_label=root.model_label,
                            source=Source.IMPORTED, session_id=session.id, parent_id=root.id,
                            branch_position=2, title=payload(base, "branch"))
        store.save_generation(root)
        store.save_generation(branch)
        add_annotation(store, branch.id, 1, payload(base, "note"), end=2)
        token_set = create_token_set(store, session.id, payload(base, "set"))
        add_token(store, token_set.id, root.model_label, 7, " x", word=payload(base, "word"))
        batch = create_batch(store, payload(base, "batch"), "prompts", root.model_label,
                             RunSettings(DecodeParams()).to_json(), session.id)
        add_items(store, batch, [])  # a batch is listed once its items are read
        with pytest.raises(InputFormatError, match="Name the flag"):  # flag names are words
            add_custom_flag(store, batch, payload(base, "flag"), "TRUE")
        update_settings(store, session.id, {current_key("default"): branch.id})
    return session.id, branch.id


def _monitor_file(tmp_path, base: str):
    tokens = [payload(base, "tok"), " is", " fine"]
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps([{"prompt": payload(base, "prompt"), "response": "".join(tokens),
                                 "tokens": tokens,
                                 "trait_scores": {payload(base, "trait"): [0.5, -0.2, 0.1]}}]))
    return path


def _nothing_points_at(page, base: str) -> None:
    r"""No element links or loads `base`, however its URL was mangled on the way.

    CSS selectors pierce open shadow roots; matching on the port alone also finds an
    autolinked "http://127\.0\.0\.1:PORT" (its href percent-encodes the backslashes).
    """
    port = base.rsplit(":", 1)[1]
    for selector in (f'[src*=":{port}"]', f'[href*=":{port}"]', f'[style*=":{port}"]'):
        found = page.locator(selector)
        assert found.count() == 0, (selector, [found.nth(i).evaluate(
            "e => e.outerHTML.slice(0, 200)") for i in range(min(3, found.count()))])


def test_every_name_is_shown_as_text_and_fetches_nothing(streamlit_app, browser, pixel,
                                                          tmp_path, screenshot):
    session_id, _ = _seed(pixel)
    url = streamlit_app(REPO_ROOT / "app.py",
                        env={"PERPLEX_MODEL_CACHE": str(REPO_ROOT / "data" / "models")})
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    try:
        page.goto(f"{url}/?session={session_id}")
        wait_for_script(page, LOAD_TIMEOUT)
        page.get_by_text("SmolLM2-135M-Instruct (bundled)").first.wait_for(timeout=LOAD_TIMEOUT)
        # the branch navigator, the before/after captions and the sidebar name the branch
        page.get_by_text("branch ![i](", exact=False).first.wait_for()
        wait_for_script(page)
        _nothing_points_at(page, pixel)
        screenshot(page, "untrusted_1_default", full_page=True)

        page.goto(f"{url}/batch?session={session_id}")
        wait_for_script(page, LOAD_TIMEOUT)
        # the run caption names the model label as typed (the picker shows the batch's name)
        caption = page.get_by_text(re.compile(r"^Model model !\[i\]\(http")).first
        caption.wait_for()  # the label typed, as text: no image, no link
        _nothing_points_at(page, pixel)

        # a dataset whose column is named with the payload: the mapping lists it as text
        page.goto(f"{url}/calibration?session={session_id}")
        wait_for_script(page, LOAD_TIMEOUT)
        page.get_by_text("upload a dataset").click()
        wait_for_script(page)
        dataset = tmp_path / "columns.csv"
        column = payload(pixel, "column").replace('"', '""')  # CSV quoting
        dataset.write_text(f'question,"{column}"\nWhat is 2+2?,4\n', encoding="utf-8")
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
            str(dataset))
        page.get_by_label("Fields as in").wait_for()
        wait_for_script(page)
        page.get_by_role("button", name="Use this dataset").click()  # no answer field: refused
        wait_for_script(page)
        _nothing_points_at(page, pixel)

        # a transcript whose role is the payload: refused, the role quoted as text
        page.goto(f"{url}/?session={session_id}")
        wait_for_script(page, LOAD_TIMEOUT)
        page.get_by_text("Open a transcript, an API response or a saved generation").click()
        chat = tmp_path / "roles.json"
        chat.write_text(json.dumps([{"role": payload(pixel, "role"), "content": "Hi"},
                                    {"role": "assistant", "content": "Hello"}]))
        page.locator('[data-testid="stFileUploaderDropzoneInput"][accept*=".jsonl"]') \
            .set_input_files(str(chat))
        page.get_by_text("has role", exact=False).first.wait_for()
        wait_for_script(page)
        _nothing_points_at(page, pixel)

        page.goto(f"{url}/persona_traits?session={session_id}")
        wait_for_script(page, LOAD_TIMEOUT)
        page.get_by_text("Open per-token trait-monitor JSON", exact=False).click()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
            str(_monitor_file(tmp_path, pixel)))
        page.get_by_text("Imported monitor data").wait_for()
        wait_for_script(page)
        page.locator(".js-plotly-plot").first.wait_for()
        # the trait's name is in the figures' legends and titles, as text
        assert page.locator(".js-plotly-plot").filter(has_text="trait ![i](").count() >= 1
        _nothing_points_at(page, pixel)
        screenshot(page, "untrusted_2_traits", full_page=True)
    finally:
        context.close()
    assert [u for u in requested if u.startswith(pixel)] == []
    assert _Pixel.seen == []
