"""After a websocket drop the dashboard shows what a fresh load would, without a reload and without polling.

Power, the edges' per-minute history and the delivery chart only ever got
deltas: whatever was stored while the socket was down stayed missing until
the page was reloaded. Every connect's summary now carries the power per
minute and each edge's last hour, and the page repaints them from it.
"""

import asyncio
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from fogwire import protocol as wire
from tests.conftest import (
    EDGE_ID,
    EDGE_SECRET,
    CloudThread,
    dashboard_summary,
    make_rows,
    open_dashboard,
    store_through_cloud,
    wait_for,
)
from tests.test_it_shows_the_dashboard_in_a_browser import (  # noqa: F401
    CHROMIUM,
    FLAGS,
    STATES_DATA,
    desktop_page,
    web,
)

MINUTE_MS = 60_000
KW_ROUNDING = 1e-5  # the reader rounds each minute's W to 3 places; a few minutes of it, in kW
# The page's sockets, kept where the test can close them, and sent nowhere while `__blocked` (a drop that lasts).
DROPPABLE_SOCKETS = """
window.__sockets = []; window.__blocked = false;
window.WebSocket = class extends WebSocket {
  constructor(url) { super(window.__blocked ? url.replace('/ws/dashboard/', '/ws/nowhere/') : url); window.__sockets.push(this); }
};
"""
PAGE_KW = "Chart.getChart('power-chart').data.datasets[0].data.filter((v) => v !== null).reduce((a, v) => a + v, 0)"
EDGE_BACKLOG = "Chart.getChart(document.querySelector('#edges .edge-card canvas')).data.datasets[0].data" \
               ".filter((v) => v !== null).slice(-1)[0]"
FLOW = "Chart.getChart('flow-chart').data.datasets.map((d) => d.data[d.data.length - 1])"


def recent_rows(count, household, start_id, minutes_ago):
    return make_rows(count, household=household, start_id=start_id,
                     base_ms=(int(time.time() * 1000) - minutes_ago * MINUTE_MS) // 5000 * 5000)


def api_kw(base):
    """The power the page draws, as the API gives it: its complete minutes (one still filling is not drawn)."""
    with urllib.request.urlopen(base + "api/power/", timeout=10) as response:
        return sum(p["power_w"] for p in json.load(response) if p["power_w"] is not None and p["complete"]) / 1000


def test_it_sends_the_power_and_each_edges_hour_in_the_summary(publishing_cloud):
    rows = recent_rows(24, "summary", 0, 5)
    store_through_cloud(publishing_cloud, rows)

    async def scenario():
        socket, summary = await open_dashboard()
        await socket.disconnect()
        return summary

    summary = asyncio.run(scenario())
    shown = sum(p["power_w"] for p in summary["power"] if p["power_w"] is not None)
    assert len(summary["power"]) == 60
    expected = sum(avg * (we - ws) for _, _, ws, we, avg, _ in rows) / MINUTE_MS
    assert shown == pytest.approx(expected, abs=KW_ROUNDING * 1000)
    [edge] = summary["edges"]
    assert edge["edge"] == EDGE_ID and len(edge["history"]["minutes"]) == 60
    assert sum(edge["history"]["acked"]) == len(rows)


def test_it_shows_what_was_stored_while_the_websocket_was_down(web, redis_url, cloud_prefix):  # noqa: F811
    from playwright.sync_api import sync_playwright

    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    store_through_cloud(cloud, recent_rows(24, "before", 0, 6))
    cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=5), data=False)
    errors = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = desktop_page(browser, errors)
            page.add_init_script(DROPPABLE_SOCKETS)
            page.goto(web)
            page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=15000)
            page.wait_for_function(f"{PAGE_KW} > 0", timeout=10000)
            page.wait_for_function(f"{EDGE_BACKLOG} === 5", timeout=10000)

            page.evaluate("window.__blocked = true; window.__sockets.forEach((s) => s.close())")
            page.wait_for_function("document.getElementById('link').classList.contains('link-down')", timeout=5000)
            # No heartbeat reaches the page now: its edge is not known, not "offline".
            page.wait_for_function("document.querySelector('#edges .badge').textContent"
                                   ".includes('not known while the live feed is down')", timeout=5000)
            store_through_cloud(cloud, recent_rows(36, "during", 1000, 3))  # nobody listens: these updates are lost
            cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=42), data=False)
            page.wait_for_timeout(1500)
            assert page.evaluate(FLOW) == [None, None]  # acked/s and backlog unknown while down: a gap, not a fall to zero

            page.evaluate("window.__blocked = false")
            page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=10000)
            assert wait_for(lambda: page.evaluate(PAGE_KW) == pytest.approx(api_kw(web), abs=KW_ROUNDING), timeout=5)
            assert page.evaluate(EDGE_BACKLOG) == 42
            browser.close()
    finally:
        cloud.stop()
    assert [e for e in errors if "/ws/nowhere/" not in e] == []  # the refused reconnects are the drop's


RECENT_TEXT = "Array.from(document.querySelectorAll('#recent tr')).map((tr) => tr.textContent)"


def test_it_counts_nothing_twice_when_an_update_holds_what_the_summary_showed(web, redis_url, cloud_prefix):  # noqa: F811
    """The page's socket joins the updates before it reads its summary, so the first updates may be of batches
    the summary already showed, or older still (another cloud process's, read before). They change nothing."""
    from channels.layers import get_channel_layer
    from playwright.sync_api import sync_playwright

    from cloud_app.server import DASHBOARD_GROUP

    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    store_through_cloud(cloud, recent_rows(24, "twice", 0, 5))
    errors = []

    def send(update, backlog):
        """An update as the cloud publishes it, with a heartbeat the page shows once it has applied it."""
        beat = {EDGE_ID: {"backlog": backlog, "paused": False, "ts": int(time.time() * 1000)}}
        message = {"type": "pipeline.update", "acked": 0, "edges": {}, "states": {}, "recent": [], "ends": {},
                   "ts": int(time.time() * 1000), **update, "beats": beat}
        with ThreadPoolExecutor(1) as pool:  # playwright's loop runs in this thread
            pool.submit(asyncio.run, get_channel_layer().group_send(DASHBOARD_GROUP, message)).result(timeout=10)
        page.wait_for_function(f"{EDGE_BACKLOG} === {backlog}", timeout=10000)

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = desktop_page(browser, errors)
            page.goto(web)
            page.wait_for_function("document.getElementById('link').classList.contains('link-live')", timeout=15000)
            assert wait_for(lambda: page.evaluate(PAGE_KW) == pytest.approx(api_kw(web), abs=KW_ROUNDING), timeout=10)
            cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=1), data=False)
            page.wait_for_function(f"{EDGE_BACKLOG} === 1", timeout=10000)
            shown_kw, shown_rows, shown_states = page.evaluate(PAGE_KW), page.evaluate(RECENT_TEXT), page.evaluate(STATES_DATA)
            summary = dashboard_summary(web.rstrip("/"))  # what the page's summary held (nothing was stored since)
            totals = {str(p["minute"]): p["power_w"] * MINUTE_MS for p in summary["power"] if p["power_w"] is not None}
            states = {s["state"]: [s["households"], s["mean_power_w"] * s["tuples"], s["tuples"]]
                      for s in summary["states"] if s["tuples"]}
            assert totals and states and len(shown_rows) == 15

            send({"acked": 24, "edges": {EDGE_ID: 24}, "power": totals, "states": states,
                  "recent": summary["recent"][:15]}, backlog=2)  # the batch again, as totals
            assert page.evaluate(PAGE_KW) == pytest.approx(shown_kw, abs=KW_ROUNDING)
            assert page.evaluate(RECENT_TEXT) == shown_rows
            assert page.evaluate(STATES_DATA) == shown_states

            older = [{**row, "id": row["id"] + 1000, "household": f"older-{row['id']}", "acked_ms": row["acked_ms"] - MINUTE_MS}
                     for row in summary["recent"][:15]]
            send({"power": {minute: wms / 2 for minute, wms in totals.items()},
                  "states": {state: [h, total / 2, count // 2] for state, (h, total, count) in states.items()},
                  "recent": older}, backlog=3)  # read before the summary: smaller totals, tuples stored earlier
            assert page.evaluate(PAGE_KW) == pytest.approx(shown_kw, abs=KW_ROUNDING)
            assert page.evaluate(RECENT_TEXT) == shown_rows
            assert page.evaluate(STATES_DATA) == shown_states
            browser.close()
    finally:
        cloud.stop()
    assert errors == []
