"""Headless Chromium for the browser tests: the system's browser and driver (Debian `chromium`, `chromium-driver`,
installed by .ci/run), driven by selenium with the driver path given explicitly, so selenium-manager never tries to
download anything. `browser()` skips the test, with the reason, where either is missing."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
# the machine's network is closed: without these, Chromium keeps trying to reach its own services
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")


def _first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if shutil.which(p)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def browser() -> Iterator[object]:
    """A selenium Chrome driver on the system's headless Chromium (fresh profile, deleted afterwards)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _first(CHROMIUM_CANDIDATES), _first(DRIVER_CANDIDATES)
    if chromium is None or driver_path is None:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver, as .ci/run does)")
    profile = tempfile.mkdtemp(prefix="bafenet-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
