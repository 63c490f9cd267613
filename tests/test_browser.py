"""The demo end to end in headless Chromium: two people chat, presence follows them, the
connection comes back after a drop, and the dashboard follows it all."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_MS = 5000


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo", EXAMPLES / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync_api() -> ModuleType:
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError:
        pytest.fail("Playwright is not installed: pip install playwright", pytrace=False)


demo = _load_demo()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # The system's Chromium where there is one, else Playwright's own.
    executable = shutil.which("chromium")
    sync_api = _sync_api()
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, timeout=30_000)
        except sync_api.Error as exc:
            pytest.fail(
                "the browser test needs Chromium: a `chromium` executable on PATH "
                "(Debian/Ubuntu: apt-get install chromium) or Playwright's own "
                f"(python -m playwright install chromium): {exc}",
                pytrace=False,
            )
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """``new_page()``: a page in a fresh context (its own storage, like another person)."""
    contexts = []

    def open_page() -> Any:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def join(page: Any, base_url: str, nick: str, room: str = "e2e") -> None:
    """Fill in the chat's join form and wait until the page is connected."""
    expect = _sync_api().expect
    page.goto(f"{base_url}/chat")
    page.fill("#nick", nick)
    page.fill("#room", room)
    page.click("#join button")
    expect(page.locator("#state")).to_have_text("connected", timeout=TIMEOUT_MS)
    expect(page).to_have_url(re.compile(rf"\?room={room}&nick={nick}$"))


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_two_people_chat_and_the_dashboard_follows(serve: Any, new_page: Any) -> None:
    expect = _sync_api().expect
    server = serve(demo.create_app(leave_grace=0, interval=0.1), ws="haske")

    dashboard = new_page()
    dashboard.goto(f"{server.http_url}/dashboard")
    expect(dashboard.locator("#state")).to_have_text("connected", timeout=TIMEOUT_MS)
    expect(dashboard.locator("#connections")).to_have_text("1", timeout=TIMEOUT_MS)
    expect(dashboard.locator("#no-rooms")).to_be_visible()
    components = dashboard.locator("#backends tr td:first-child")
    expect(components).to_have_text(
        ["frames", "connection", "protocol", "handshake", "broadcast"], timeout=TIMEOUT_MS
    )

    ana, ben = new_page(), new_page()
    join(ana, server.http_url, "Ana")
    join(ben, server.http_url, "Ben")
    for page in (ana, ben):
        expect(page.locator("#presence .nick")).to_have_text(["Ana", "Ben"], timeout=TIMEOUT_MS)
        expect(page.locator("#count")).to_have_text("2")
    expect(ana.locator("#log .note").last).to_have_text("Ben joined")
    expect(ana.locator("#presence li.me .nick")).to_have_text("Ana")

    say(ana, "Hello Ben!")
    say(ben, "Hi Ana")
    for page in (ana, ben):
        expect(page.locator("#log .message .text")).to_have_text(["Hello Ben!", "Hi Ana"])
        expect(page.locator("#log .message .nick")).to_have_text(["Ana", "Ben"])
    expect(ana.locator("#log .message.mine .text")).to_have_text(["Hello Ben!"])

    # User text is shown as text, never run as HTML.
    attack = '<img src=x onerror="window.pwned = 1"><b>bold</b>'
    say(ben, attack)
    expect(ana.locator("#log .message .text").last).to_have_text(attack)
    assert ana.locator("#log img, #log b").count() == 0
    assert ana.evaluate("window.pwned") is None

    # The dashboard's numbers follow: three connections, two people, a room, recent messages.
    expect(dashboard.locator("#connections")).to_have_text("3", timeout=TIMEOUT_MS)
    expect(dashboard.locator("#users")).to_have_text("2")
    expect(dashboard.locator("#rooms td")).to_have_text(["#e2e", "2"])
    for i in range(5):
        say(ana, f"burst {i}")
    expect(dashboard.locator("#messages_per_second")).not_to_have_text("0", timeout=TIMEOUT_MS)
    uptime = dashboard.locator("#uptime").text_content()
    expect(dashboard.locator("#uptime")).not_to_have_text(uptime or "", timeout=3000)

    # Ben closes his tab: Ana sees him leave, and so does the dashboard.
    ben.close()
    expect(ana.locator("#presence .nick")).to_have_text(["Ana"], timeout=TIMEOUT_MS)
    expect(ana.locator("#log .note").last).to_have_text("Ben left")
    expect(ana.locator("#count")).to_have_text("1")
    expect(dashboard.locator("#connections")).to_have_text("2", timeout=TIMEOUT_MS)
    expect(dashboard.locator("#users")).to_have_text("1")


def test_the_chat_reconnects_after_a_drop(serve: Any, new_page: Any) -> None:
    expect = _sync_api().expect
    server = serve(demo.create_app(leave_grace=0), ws="haske")
    ana, ben = new_page(), new_page()

    # Route Ana's socket through the test so that it can cut the connection.
    cuts: list[Any] = []

    def through_test(route: Any) -> None:
        cuts.append((route, route.connect_to_server()))

    ana.route_web_socket(re.compile(r"/ws/chat/"), through_test)
    join(ana, server.http_url, "Ana")
    join(ben, server.http_url, "Ben")
    expect(ana.locator("#presence .nick")).to_have_text(["Ana", "Ben"], timeout=TIMEOUT_MS)
    ana.evaluate(
        """() => {
            const badge = document.getElementById("state");
            window.states = [];
            new MutationObserver(() => window.states.push(badge.dataset.state))
              .observe(badge, { attributes: true, childList: true });
        }"""
    )

    to_page, to_server = cuts[-1]
    to_server.close(code=1001, reason="going away")
    to_page.close(code=1012, reason="service restart")

    # The page saw the drop, waited, and connected again.
    ana.wait_for_function(
        "window.states.includes('retrying') && window.states.at(-1) === 'open'", timeout=TIMEOUT_MS
    )
    expect(ana.locator("#state")).to_have_text("connected")
    assert len(cuts) == 2
    # Back in the room, presence rebuilt from the new welcome, and messages flow both ways.
    expect(ana.locator("#presence li")).to_have_count(2, timeout=TIMEOUT_MS)
    expect(ana.locator("#presence li[data-nick=Ben]")).to_be_visible()
    say(ana, "I am back")
    expect(ben.locator("#log .message .text").last).to_have_text("I am back")
    say(ben, "welcome back")
    expect(ana.locator("#log .message .text").last).to_have_text("welcome back")


def test_a_refused_nickname_is_explained(serve: Any, new_page: Any) -> None:
    expect = _sync_api().expect
    server = serve(demo.create_app(), ws="haske")
    page = new_page()
    page.goto(f"{server.http_url}/chat?room=e2e&nick=%E2%80%8B%0A")
    expect(page.locator("#error")).to_have_text(
        "a nickname is 1-24 printable characters", timeout=TIMEOUT_MS
    )
    expect(page.locator("#join")).to_be_visible()
    expect(page.locator("#state")).to_have_attribute("data-state", "closed")
