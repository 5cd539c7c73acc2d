"""examples/web_chat in a real browser: headless Chromium clicks Stop, or closes the tab.

The app runs under uvicorn in a thread (asyncio), on a socket bound to 127.0.0.1 port 0;
its model is the emulator, whose ledger says what the server did. Skipped only where
Chromium is missing and ``CI`` is unset: under CI a missing browser is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tether.testing import EmulatedModel, ResponsesEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tether.testing import Ledger

APP = Path(__file__).parent.parent / "examples" / "web_chat" / "app.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
STORY = EmulatedModel(ttft=0.0, tokens_per_s=20.0, length=2000)
"""Streams for over a minute and a half: only a stop ends it within the test."""

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        pytest.fail(
            "CI=true and no chromium/chromedriver: .ci/run installs them "
            "(apt-get install -y chromium chromium-driver)",
            pytrace=False,
        )
    pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)  # fmt: skip

from selenium import webdriver  # noqa: E402 (only once the browser is known to be there)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _load_app() -> Any:
    spec = importlib.util.spec_from_file_location("web_chat_app", APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def emu() -> Iterator[ResponsesEmulator]:
    with ResponsesEmulator(models={"story": STORY}) as emu:
        yield emu


@pytest.fixture
def url(emu: ResponsesEmulator) -> Iterator[str]:
    """The app, served by uvicorn in a thread until the test ends."""
    import uvicorn

    app = _load_app().create_app(emu.async_client, model="story")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # the browser's connections queue here until uvicorn accepts them
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _ask(browser: webdriver.Chrome, url: str, emu: ResponsesEmulator) -> str:
    """Load the page, click Send, and wait until the answer is streaming into it."""
    before = len(emu.ledger)
    browser.get(url)
    browser.find_element(By.ID, "send").click()
    emu.wait_for_sync(
        lambda ledger: len(ledger) > before and ledger.responses[-1].tokens_generated >= 10,
        timeout=30,
    )
    response_id = emu.ledger.responses[-1].id
    WebDriverWait(browser, 30).until(
        lambda b: (
            b.find_element(By.ID, "answer").text.strip()
            and not b.find_element(By.ID, "stop").get_attribute("disabled")
        )
    )
    return response_id


def _stopped_on_the_server(ledger: Ledger, response_id: str) -> None:
    record = ledger[response_id]
    assert record.status == "cancelled"
    assert record.stopped_by == "cancel"  # a server-side cancel, not a dropped connection
    assert record.tokens_after_cancel <= 1
    assert ledger.orphans() == []
    assert not any(r.generating for r in ledger)


def test_stop_button_cancels_the_response_on_the_server(
    browser: webdriver.Chrome, url: str, emu: ResponsesEmulator
) -> None:
    response_id = _ask(browser, url, emu)
    browser.find_element(By.ID, "stop").click()
    emu.wait_for_sync(lambda ledger: ledger[response_id].status == "cancelled", timeout=30)
    _stopped_on_the_server(emu.ledger, response_id)
    status = WebDriverWait(browser, 30).until(
        lambda b: (text := b.find_element(By.ID, "status").text).startswith("explicit") and text
    )
    assert status == "explicit: cancelled"  # the page shows the server's receipt


def test_closing_the_tab_cancels_the_response_on_the_server(
    browser: webdriver.Chrome, url: str, emu: ResponsesEmulator
) -> None:
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    response_id = _ask(browser, url, emu)
    browser.close()  # the tab goes, its SSE connection with it
    browser.switch_to.window(first)
    emu.wait_for_sync(lambda ledger: ledger[response_id].status == "cancelled", timeout=30)
    _stopped_on_the_server(emu.ledger, response_id)
