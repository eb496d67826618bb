"""The dashboard in headless Chromium (Debian's), driven by Playwright: real page, real websocket, real data."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings

from cloud_app.postal import STATES, locate
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, ROOT, CloudThread, free_port, make_rows, store_through_cloud, wait_for
from tooling.chaos.proxy import Proxy
from tooling.net import port_open

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
STATES_DATA = "JSON.stringify(Chart.getChart('states-chart').data.datasets[0].data)"


NEWEST_POWER = "Chart.getChart('power-chart').data.datasets[0].data.filter(v => v !== null).slice(-1)[0]"


def shows_the_newest_complete_minute(page, web):
    """Whether the page's newest power point is the API's newest complete minute, asked again each time (a
    minute may settle meanwhile)."""
    with urllib.request.urlopen(web + "api/power/", timeout=10) as response:
        complete = [p["power_w"] for p in json.load(response) if p["complete"] and p["power_w"] is not None]
    shown = page.evaluate(NEWEST_POWER)
    return shown is not None and abs(shown - complete[-1] / 1000) < 1e-6


def desktop_page(browser, errors):
    """A desktop-sized page whose console errors and uncaught exceptions land in `errors`."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def expected_kwh(rows):
    sums = {s: [0.0, 0] for s in STATES}
    for _, household, _, _, average, _ in rows:
        entry = sums[locate(household)[1]]
        entry[0] += average
        entry[1] += 1
    return [(total / count) * 8.76 if count else 0 for total, count in sums.values()]


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium and one playwright driver for the module's tests: started for each test, they cost
    seconds of CPU each time. A test's pages close with it (`browser`)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: make test installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium):
    """The module's Chromium; each page a test opens has a context of its own, closed after the test."""
    yield chromium
    for context in chromium.contexts:
        context.close()


@pytest.fixture
def web(cloud_settings, redis_url, cloud_prefix):
    port = free_port()
    env = {**os.environ, "FOG_CLOUD_REDIS_URL": redis_url, "FOG_CLOUD_KEY_PREFIX": cloud_prefix}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "fogsite.asgi:application", "--host", "127.0.0.1",
                             "--port", str(port), "--lifespan", "off", "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", port), timeout=30, interval=0.2), "the web server did not start"
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(15)  # a closed socket's receive ends within one 5 s pop (fogsite.channel_layer)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("the web server was still running 15 s after SIGTERM") from None


def test_it_shows_stored_data_and_changes_live_without_reload(web, redis_url, cloud_prefix, browser):
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    rows = make_rows(300, household="page")
    store_through_cloud(cloud, rows)
    errors, requests = [], []
    try:
        page = desktop_page(browser, errors)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(web)
        page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=15000)
        # The socket opens before its summary (or the API's first paint) arrives: wait for the figures.
        page.wait_for_function(f"{STATES_DATA} !== {json.dumps(json.dumps([0] * 16, separators=(',', ':')))}",
                               timeout=15000)
        shown = json.loads(page.evaluate(STATES_DATA))
        assert shown == pytest.approx(expected_kwh(rows), abs=1e-6)

        more = make_rows(200, household="newcomer", start_id=1000, power=2500.0)
        store_through_cloud(cloud, more)
        page.wait_for_function(f"{STATES_DATA} !== {json.dumps(json.dumps(shown, separators=(',', ':')))}",
                               timeout=10000)
        page.wait_for_timeout(300)
        assert json.loads(page.evaluate(STATES_DATA)) == pytest.approx(expected_kwh(rows + more), abs=1e-6)
        assert page.locator("#recent tr").count() == 15  # the newest, first paint and live ones merged
        # An edge whose ingest waits for its disk budget says so in its heartbeat; the badge shows it.
        cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=5, paused=True), data=False)
        page.wait_for_function("[...document.querySelectorAll('#edges .badge.paused')]"
                               ".some((b) => b.textContent.includes('paused for its disk budget'))", timeout=10000)
        screenshots = Path(django_settings.VAR_DIR) / "screenshots"
        screenshots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(web)
        phone.wait_for_function("document.getElementById('link').classList.contains('link-live')")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        phone.screenshot(path=str(screenshots / "dashboard-phone.png"), full_page=True)
    finally:
        cloud.stop()
    assert errors == []
    outside = [u for u in requests if urlsplit(u).scheme != "data"
               and urlsplit(u).hostname not in ("127.0.0.1", "localhost")]
    assert outside == []


def test_it_says_when_the_websocket_is_down(web, browser):
    page = browser.new_page()
    page.route("**/ws/dashboard/", lambda route: route.abort())
    page.add_init_script("window.WebSocket = class extends WebSocket { constructor(url) { "
                         "super(url.replace('/ws/dashboard/', '/ws/nowhere/')); } };")
    page.goto(web)
    page.wait_for_function("document.getElementById('link').classList.contains('link-down')", timeout=10000)
    assert "Reconnecting" in page.inner_text("#link")


def test_it_shows_the_map_a_states_households_and_one_households_live_chart(web, redis_url, cloud_prefix, browser):
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    now = int(time.time() * 1000) // 5000 * 5000
    rows = make_rows(120, household="map", base_ms=now - 600_000)  # ten minutes of windows, up to now
    store_through_cloud(cloud, rows)
    household = "map-2"
    state = locate(household)[1]
    errors = []
    try:
        page = desktop_page(browser, errors)
        page.goto(web)
        page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=15000)
        page.wait_for_function("document.querySelectorAll('#map svg path').length === 16", timeout=10000)
        fill = page.eval_on_selector(f"#map path#{state.lower()}", "p => p.style.fill")
        assert fill and fill != "rgb(229, 231, 235)", "a state with data is coloured"
        assert "kWh" in page.inner_text("#legend") and "CC BY 4.0" in page.inner_text(".credit")
        page.hover(f"#map path#{state.lower()}")
        assert "households" in page.inner_text("#map-tip")

        page.click(f"#map path#{state.lower()}")
        page.wait_for_selector(f"#state-households tr:has-text('{household}')", timeout=10000)
        page.click(f"#state-households tr:has-text('{household}')")
        page.wait_for_function("Chart.getChart('household-chart').data.datasets[0].data.length > 0", timeout=10000)
        points = page.evaluate("Chart.getChart('household-chart').data.datasets[0].data.length")
        assert points == sum(1 for r in rows if r[1] == household)
        assert locate(household)[0] in page.inner_text("#household-facts")
        power = page.evaluate("Chart.getChart('power-chart').data.datasets[0].data.filter(v => v !== null).length")
        assert power >= 8  # ten minutes of windows in the last hour; the newest one or two are still filling
        # Its newest point is the newest complete minute, not the one still filling (drawn far too low).
        assert wait_for(lambda: shows_the_newest_complete_minute(page, web), timeout=5)

        newer = [(10_000 + i, household, now + i * 5000, now + (i + 1) * 5000, 4000.0, 3) for i in range(1, 4)]
        store_through_cloud(cloud, newer)  # the watched household's chart grows by websocket
        page.wait_for_function(f"Chart.getChart('household-chart').data.datasets[0].data.length === {points + 3}",
                               timeout=10000)
        page.wait_for_selector("#edges .edge-card", timeout=5000)
        screenshots = Path(django_settings.VAR_DIR) / "screenshots"
        screenshots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshots / "dashboard-household.png"), full_page=True)

        # A household looked up in vain takes the card: the one shown before is no longer drawn there, live.
        for missing in ("nobody-here", ".."):  # "..": not an id at all, not even asked for
            page.fill("#search-id", missing)
            page.press("#search-id", "Enter")
            page.wait_for_function(f"document.getElementById('household-title').textContent === "
                                   f"'No household \"{missing}\" has been stored yet.'", timeout=10000)
        later = [(20_000 + i, household, now + i * 5000, now + (i + 1) * 5000, 4321.5, 3) for i in range(4, 6)]
        store_through_cloud(cloud, later)
        page.wait_for_function("document.getElementById('recent').textContent.includes('4321.5')", timeout=10000)
        time.sleep(1)  # a watched household's windows follow the update that brought them
        assert page.evaluate("Chart.getChart('household-chart').data.datasets[0].data.length") == 0
    finally:
        cloud.stop()
    assert [e for e in errors if "404" not in e] == []  # the browser's own line per request answered 404


def test_it_says_so_when_a_states_list_or_a_household_cannot_be_loaded(web, redis_url, cloud_prefix, browser):
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    store_through_cloud(cloud, make_rows(10, household="gone", base_ms=int(time.time() * 1000) // 5000 * 5000 - 60_000))
    state = locate("gone-1")[1]
    unavailable = {"status": 503, "content_type": "application/json", "body": '{"detail": "the store is unavailable"}'}
    errors = []
    try:
        page = desktop_page(browser, errors)
        page.route("**/api/states/*/households/**", lambda route: route.fulfill(**unavailable))
        page.route("**/api/households/*/", lambda route: route.fulfill(**unavailable))
        page.goto(web)
        page.wait_for_function("document.querySelectorAll('#map svg path').length === 16", timeout=15000)
        page.click(f"#map path#{state.lower()}")
        page.wait_for_selector("#state-households td:has-text('could not be loaded')", timeout=10000)
        page.fill("#search-id", "gone-1")
        page.press("#search-id", "Enter")
        page.wait_for_function("document.getElementById('household-title').textContent"
                               ".includes('could not be loaded')", timeout=10000)  # not "never stored"
    finally:
        cloud.stop()
    assert [e for e in errors if "503" not in e] == []  # the browser's own line per refused request


def test_it_settles_the_minutes_of_power_by_the_servers_clock_not_the_browsers(web, redis_url, cloud_prefix, browser):
    """A browser whose clock runs ten minutes ahead still leaves out the minute that is filling on the server."""
    from datetime import datetime, timedelta


    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    now = int(time.time() * 1000) // 5000 * 5000
    store_through_cloud(cloud, make_rows(120, household="ahead", base_ms=now - 595_000))  # up to the current minute
    errors = []
    try:
        page = desktop_page(browser, errors)
        page.clock.set_system_time(datetime.now() + timedelta(minutes=10))
        page.goto(web)
        page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=15000)
        assert wait_for(lambda: shows_the_newest_complete_minute(page, web), timeout=5)
        # A window two hours ahead (a meter's clock running fast) must not push the hour off the chart.
        store_through_cloud(cloud, make_rows(1, household="fast", start_id=5000, base_ms=now + 7_200_000))
        page.wait_for_timeout(2500)  # its update came, and the chart was painted again
        assert wait_for(lambda: shows_the_newest_complete_minute(page, web), timeout=5)
    finally:
        cloud.stop()
    assert errors == []


def test_it_says_when_the_cloud_falls_silent_and_when_it_speaks_again(web, redis_url, cloud_prefix, browser):
    """The page's own feed stays up while the cloud is away: it must not go on calling itself live."""

    from cloud_app.server import TICK_EVERY_SECONDS

    silent_ms = 3 * TICK_EVERY_SECONDS * 1000  # as the page reckons it
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    try:
        page = browser.new_page()
        page.goto(web)
        page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=15000)
        page.wait_for_timeout(silent_ms + 1500)  # nothing stored meanwhile: the cloud's ticks keep it live
        assert "link-live" in page.get_attribute("#link", "class")
        cloud.stop()
        page.wait_for_function("document.getElementById('link').textContent.includes('the cloud has sent "
                               "nothing since')", timeout=silent_ms + 5000)
        cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
        page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=10000)
    finally:
        cloud.stop()


@pytest.fixture
def proxied(web, redis_url, cloud_prefix, browser):
    """(a live page that reaches the web server through a proxy, the proxy, the page's websockets so far) and
    how long the page waits on a socket that brings nothing before it gives up on it."""
    from cloud_app.consumers import ALIVE_EVERY_SECONDS

    proxy = Proxy(free_port(), urlsplit(web).port).start()
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    try:
        page = browser.new_page()
        sockets = []
        page.on("websocket", lambda socket: sockets.append(socket))
        page.goto(f"http://127.0.0.1:{proxy.listen_port}/")
        page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=15000)
        yield page, proxy, sockets, 3 * ALIVE_EVERY_SECONDS * 1000  # as the page reckons it
    finally:
        cloud.stop()
        proxy.stop()


def test_it_opens_a_new_socket_when_its_socket_dies_on_the_way(proxied):
    """A socket the network dropped half-open (a laptop asleep, a NAT that forgot it) brings nothing and never
    closes. The web server's own "alive" messages tell the page so: it connects again, instead of waiting on
    the dead socket for ever and blaming the cloud, which went on speaking all along."""
    page, proxy, sockets, dead_ms = proxied
    proxy.freeze()
    page.wait_for_function("document.getElementById('link').textContent.includes('nothing has come on the "
                           "websocket since')", timeout=dead_ms + 5000)
    page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=10000)
    assert len(sockets) == 2


def test_it_gives_up_on_a_socket_whose_handshake_nobody_answers(proxied):
    """A new socket that a proxy took and never answers stays CONNECTING for as long as the browser likes: the
    page gives up on it as on a dead open one, and the next gets through."""
    page, proxy, sockets, dead_ms = proxied
    proxy.hold_new()
    proxy.freeze()  # the open socket dies; the page's next one is taken and never answered
    page.wait_for_function("document.getElementById('link').textContent.includes('nothing has come')",
                           timeout=dead_ms + 5000)
    for _ in range(100):  # the page's events come in while playwright is called
        if len(sockets) == 2:
            break
        page.wait_for_timeout(100)
    assert len(sockets) == 2
    proxy.hold_new(False)
    page.wait_for_function("document.getElementById('link').textContent.includes('did not open within')",
                           timeout=dead_ms + 5000)
    page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=10000)
    assert len(sockets) == 3


def test_it_names_the_time_zone_of_the_times_it_shows(web, browser):
    page = browser.new_page(timezone_id="America/Sao_Paulo")  # no daylight saving: always UTC-03:00
    page.goto(web)
    assert page.inner_text("#time-zone") == ("Times are shown in America/Sao_Paulo (UTC-03:00), "
                                             "this browser's time zone.")
