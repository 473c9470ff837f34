"""The web chat page of `crawl2chat serve-model` in headless Chromium: a message typed and sent,
its reply streamed in, tool calls shown apart, and the conversation kept for the next turn."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.models import QUESTION

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    missing = None if CHROMIUM.exists() else f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (a dev dependency: pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI"):  # CI installs both (.ci/run): there, a skip would hide a broken page
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as p:
        # The system's Chromium, never a downloaded one; --no-sandbox since CI runs as root.
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


def send(page, text: str) -> None:
    replies = page.locator(".assistant.done").count()
    page.fill("#message", text)
    page.press("#message", "Enter")
    page.locator(".assistant.done").nth(replies).wait_for(timeout=30_000)


def test_the_page_streams_a_reply_and_shows_the_calculator_call_apart(browser, model_server, tmp_path):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    streamed: list[str] = []
    page.on("response", lambda r: streamed.append(r.headers.get("content-type", ""))
            if r.url.endswith("/v1/chat/completions") else None)
    page.goto(model_server + "/")
    page.wait_for_selector("body[data-ready=yes]")
    page.select_option("#model", "sft")

    send(page, QUESTION)
    page.screenshot(path=tmp_path / "chat.png", full_page=True)

    assert page.inner_text(".user") == QUESTION
    reply = page.locator(".assistant").first
    assert reply.inner_text() == "Let me compute that. calculator: 12*13 → 156 The answer is 156."
    assert reply.locator(".tool").inner_text() == "calculator: 12*13 → 156"
    assert streamed and streamed[0].startswith("text/event-stream")
    assert (tmp_path / "chat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The second turn is sent with the first reply's parts: the model answers as it does to them
    # (tests/cli/test_serve_model.py shows it answers differently to the flattened text).
    send(page, "And 7 plus 8?")
    assert page.locator(".assistant").nth(1).inner_text() == "Let me compute that."
    assert page.locator(".error").count() == 0
