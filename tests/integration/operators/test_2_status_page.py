"""The status page in a real headless Chromium (Debian's chromium + chromedriver via
selenium) against a running node of the real cluster: round, role, peers and the
accuracy plot render, and the page loads nothing but itself."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.operators.conftest import SPEC
from tests.integration.operators.operators_cluster import OperatorCluster

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,1400",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "Debian's chromium and chromium-driver are needed: "
            "apt-get install -y chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _status(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/status.json", timeout=10) as r:
        doc: dict[str, object] = json.loads(r.read())
    return doc


def test_status_page_shows_round_role_and_accuracy_plot(
    settled: OperatorCluster, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    h = settled
    # the node with the longest role history makes the richest page
    name = max(h.state.nodes, key=lambda n: len(_status(n.http_url)["roles"])).name  # type: ignore[arg-type]
    url = h.url(name)
    status = _status(url)
    browser.get(url + "/")
    browser.save_screenshot(str(tmp_path / "status-page.png"))

    assert browser.find_element(By.ID, "round").text == f"{SPEC.rounds} of {SPEC.rounds}"
    assert browser.find_element(By.ID, "phase").text == "finalized"
    assert browser.find_element(By.ID, "ready").text == "ready"
    assert browser.find_element(By.ID, "peers").text.startswith(f"{len(status['peers'])} of ")  # type: ignore[arg-type]
    # role history: one row per round this node was elected in, newest first
    roles = status["roles"]
    assert isinstance(roles, list) and roles, "the node was elected at least once"
    rows = browser.find_elements(By.CSS_SELECTOR, "#role-history tr")[1:]
    assert len(rows) == len(roles)
    newest = roles[-1]
    cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
    assert cells[:3] == [str(newest["round"]), newest["role"], str(newest["seat"])]

    # the accuracy plot: a rendered polyline through one marker per evaluated round
    accuracy = status["accuracy"]
    assert isinstance(accuracy, dict) and len(accuracy) >= 2
    plot = browser.find_element(By.ID, "accuracy-plot")
    assert plot.size["width"] > 300 and plot.size["height"] > 150
    line = plot.find_element(By.CSS_SELECTOR, "polyline.series")
    box = browser.execute_script("return arguments[0].getBBox()", line)
    assert box["width"] > 100, box  # drawn across the plot, not collapsed
    points = plot.find_elements(By.CSS_SELECTOR, "circle.point")
    assert len(points) == len(accuracy)
    # the higher accuracy of the last round is drawn higher up (SVG y grows downwards)
    first, last = min(accuracy, key=int), max(accuracy, key=int)
    ys = [float(p.get_attribute("cy")) for p in points]
    assert (ys[-1] < ys[0]) == (accuracy[last] > accuracy[first])
    # the stake plot has data, too
    assert browser.find_elements(By.CSS_SELECTOR, "#stake-plot polyline.series")

    # nothing but the document itself was loaded
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources == [], resources
