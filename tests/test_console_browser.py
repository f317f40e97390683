"""The staff console in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven
by selenium), against the real daemon as a subprocess whose ticks scan loopback listeners.

One walk through the console, as staff use it: refused without a cookie, sign in, the overview
with its chart drawn, filter the findings, open one, export CSV, press "scan now" and see the
new tick. A server named `<script>alert(1)</script>` shows as text and runs nothing. With
CONSOLE_SCREENSHOTS=DIR (`make screenshots`) every page is saved there as a PNG. Browser
and daemon talk only to 127.0.0.1 (targets on 127.52.0.0/16).
"""

from __future__ import annotations

import asyncio
import base64
import csv
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml

from goalkeeper.model import Transport
from goalkeeper_sim.listeners import PortListeners
from goalkeeper_sim.smtp import SmtpSink
from tests.daemon_process import DaemonProcess

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver"
)
HOSTILE = "<script>alert(1)</script>"
XSS_HOST, CACHE_HOST, HONEYPOT = "127.52.0.10", "127.52.0.11", "127.52.0.12"
T = TypeVar("T")


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[DaemonProcess, str]]:
    token = secrets.token_urlsafe(16)
    endpoints = [(ip_address(XSS_HOST), 6379, Transport.TCP),
                 (ip_address(CACHE_HOST), 11211, Transport.TCP),
                 (ip_address(HONEYPOT), 6379, Transport.TCP)]  # fmt: skip
    targets = [
        {"address": XSS_HOST, "server_name": HOSTILE, "project_id": "p-acme",
         "project_name": "acme-prod", "owner_name": "ACME Ltd", "owner_email": "ops@acme.example"},
        {"address": CACHE_HOST, "server_name": "cache-1", "project_id": "p-bob",
         "project_name": "bob-shop", "owner_name": "Bob", "owner_email": "bob@shop.example"},
        {"address": HONEYPOT, "server_name": "trap-1", "project_id": "p-sec",
         "project_name": "provider-sec", "owner_name": "Provider security",
         "owner_email": "sec@provider.example"},
    ]  # fmt: skip
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()  # the daemon's clock
    async with SmtpSink() as smtp, PortListeners(endpoints):
        (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"targets": targets}))
        config = {
            "environment": "prod",
            "schedule": {"run_at_start": True, "cron": "30 4 * * 1"},
            "scan": {
                "ports": [{"port": 6379, "protocol": "tcp", "service": "redis"},
                          {"port": 11211, "protocol": "tcp", "service": "memcached"}],
                "allowed_networks": ["127.52.0.0/16"], "allow_loopback": True,
                "privileged": False,
                "nmap_arguments": "-Pn -n -T4 --max-retries 1 --host-timeout 30s",
            },
            "inventory": {"source": "static", "static_file": str(tmp_path / "inventory.yaml")},
            "notify": {
                "send_to_customers": True, "ops_email": "ops@provider.example",
                "sender": "Goalkeeper <ops@provider.example>",
                "email": {"host": "127.0.0.1", "port": smtp.port, "starttls": False, "timeout": 3},
            },
            "exceptions": [{"network": f"{HONEYPOT}/32", "ports": ["6379/tcp"], "until": until,
                            "reason": "our honeypot, ticket 4711"}],
            "state": {"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
            "logging": {"format": "json", "level": "info"},
        }  # fmt: skip
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        process = DaemonProcess(path, env={"GOALKEEPER_HTTP__ADMIN_TOKEN": token})
        try:
            await process.start()
            await process.wait_for("tick finished")
            yield process, token
        finally:
            await process.close()
        assert token not in "\n".join(process.raw), "the admin token reached the logs"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMIUM and CHROMEDRIVER
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--no-proxy-server", "--disable-background-networking"):  # fmt: skip
        options.add_argument(argument)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    """Save the whole page (beyond the window, through DevTools) for docs/console."""
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if not folder:
        return
    taken = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{name}.png").write_bytes(base64.b64decode(taken["data"]))


def no_alert(driver: webdriver.Chrome) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018  # raises unless a dialog is open


async def step(call: Callable[..., T], *args: Any) -> T:
    """Selenium blocks: in a thread, so the loop keeps reading the daemon's log meanwhile."""
    return await asyncio.to_thread(call, *args)


def sign_in(driver: webdriver.Chrome, base: str, token: str) -> None:
    driver.get(base + "/console/findings")
    assert driver.current_url == base + "/console/login"  # refused without the cookie
    shot(driver, "login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(driver, 10).until(lambda d: d.current_url == base + "/console/")


def overview(driver: webdriver.Chrome) -> int:
    assert driver.find_element(By.ID, "open-total").text == "3"  # one of them acknowledged
    chart = driver.find_element(By.ID, "trend-30")
    points = chart.find_elements(By.CSS_SELECTOR, "circle.point")
    assert points and all(point.is_displayed() for point in points)
    assert chart.find_elements(By.CSS_SELECTOR, "polyline.series")
    assert chart.size["width"] > 300  # drawn, not an empty box
    return len(points)


def findings(driver: webdriver.Chrome, base: str) -> None:
    driver.get(base + "/console/findings")
    servers = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "td.server")]
    assert HOSTILE in servers  # the text itself, shown
    no_alert(driver)
    assert driver.execute_script("return document.scripts.length") == 0
    shot(driver, "findings")
    box = driver.find_element(By.NAME, "service")
    box.send_keys("memcached")
    driver.find_element(By.ID, "apply").click()
    WebDriverWait(driver, 10).until(lambda d: "service=memcached" in d.current_url)
    assert driver.find_element(By.ID, "total").text == "1"
    assert [td.text for td in driver.find_elements(By.CSS_SELECTOR, "td.server")] == ["cache-1"]


def one_finding(driver: webdriver.Chrome, base: str) -> None:
    driver.get(base + "/console/findings?owner=acme")
    driver.find_element(By.CSS_SELECTOR, "a.finding-link").click()
    WebDriverWait(driver, 10).until(lambda d: "/console/findings/127.52.0.10" in d.current_url)
    assert driver.find_element(By.ID, "server").text.startswith(HOSTILE)
    assert "first seen open" in driver.find_element(By.ID, "history").text
    assert driver.find_element(By.ID, "messages").find_elements(By.CSS_SELECTOR, "tbody tr")
    no_alert(driver)
    shot(driver, "finding")


def export_csv(driver: webdriver.Chrome, base: str) -> list[dict[str, str]]:
    driver.get(base + "/console/findings")
    driver.find_element(By.ID, "export-csv").click()
    target = driver.downloads / "goalkeeper-findings.csv"  # type: ignore[attr-defined]
    WebDriverWait(driver, 10).until(lambda d: target.exists())
    with target.open(newline="") as handle:
        return list(csv.DictReader(handle))


def scan_now(driver: webdriver.Chrome, base: str) -> str:
    driver.find_element(By.ID, "scan-now").click()
    WebDriverWait(driver, 10).until(lambda d: "/console/ticks?started=" in d.current_url)
    return str(driver.current_url).rsplit("=", 1)[1]


def new_tick_listed(driver: webdriver.Chrome, run_id: str) -> None:
    driver.refresh()
    rows = driver.find_elements(By.CSS_SELECTOR, f'tr.tick[data-run="{run_id}"]')
    assert rows and "success" in rows[0].text
    shot(driver, "ticks")


def the_rest(driver: webdriver.Chrome, base: str) -> None:
    for page in ("owners", "outbox"):
        driver.get(f"{base}/console/{page}")
        assert driver.find_element(By.TAG_NAME, "h1").text.lower() == page
        shot(driver, page)


async def test_staff_walk_through_the_console(
    daemon: tuple[DaemonProcess, str], browser: webdriver.Chrome
) -> None:
    process, token = daemon
    base = process.url
    await step(sign_in, browser, base, token)
    assert await step(overview, browser) == 1
    await step(findings, browser, base)
    await step(one_finding, browser, base)
    rows = await step(export_csv, browser, base)
    assert sorted(r["server_name"] for r in rows) == sorted([HOSTILE, "cache-1", "trap-1"])
    assert {r["server_name"]: r["status"] for r in rows}["trap-1"] == "acknowledged"

    await step(browser.get, base + "/console/")
    mark = len(process.lines)
    run_id = await step(scan_now, browser, base)
    await process.wait_for("tick finished", after=mark, where=lambda line: run_id in str(line))
    await step(new_tick_listed, browser, run_id)
    await step(browser.get, base + "/console/")
    assert await step(overview, browser) == 2  # the new tick on the chart
    await step(shot, browser, "overview")
    await step(the_rest, browser, base)
    await step(no_alert, browser)

    # Without the cookie (or the bearer) nothing is shown.
    await step(browser.delete_all_cookies)
    await step(browser.get, base + "/console/ticks")
    assert browser.current_url == base + "/console/login"
    async with aiohttp.ClientSession() as plain, plain.get(base + "/console/findings") as r:
        assert r.status == 401
