"""The dashboard's websocket: the current summary on connect, then the cloud's updates.

The cloud publishes a merged update to the group about every quarter second;
each client additionally gets at most MAX_PER_SECOND messages, merged, so a
slow browser never builds a queue.

A client may send {"watch": household} (or {"watch": null}): with each
update that stored tuples, it then also gets that household's newest
windows, read here from the store (a bounded read), so the page's household
view is live without the browser polling.
"""

import asyncio
import time

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from cloud_app.reader import ReaderSource
from cloud_app.server import DASHBOARD_GROUP

MAX_PER_SECOND = 4


RECENT_KEEP = 15  # the page's "latest tuples" table
WATCH_POINTS = 24  # newest windows sent to a watching client with each update (two minutes of 5 s windows)


def merge(pending, update):
    """Fold `update` into `pending` (both as published by the cloud server)."""
    if pending is None:
        pending = {"acked": 0, "edges": {}, "states": {}, "beats": {}, "power": {}, "recent": [], "ends": {}}
    pending["acked"] += update.get("acked", 0)
    for edge, count in update.get("edges", {}).items():
        pending["edges"][edge] = pending["edges"].get(edge, 0) + count
    for minute, wms in update.get("power", {}).items():
        pending["power"][minute] = pending["power"].get(minute, 0.0) + wms
    for end, count in update.get("ends", {}).items():
        pending["ends"][end] = pending["ends"].get(end, 0) + count
    pending["states"].update(update.get("states", {}))
    pending["beats"].update(update.get("beats", {}))
    pending["recent"] = (update.get("recent", []) + pending["recent"])[:RECENT_KEEP]
    pending["ts"] = update.get("ts")
    return pending


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    readers = ReaderSource()

    async def connect(self):
        self.pending, self.flush_task, self.last_sent, self.watching = None, None, 0.0, None
        await self.accept()
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        summary = await sync_to_async(lambda: self.readers().summary())()
        await self.send_json({"type": "summary", **summary})

    async def disconnect(self, code):
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)
        if self.flush_task:
            self.flush_task.cancel()

    async def receive_json(self, content, **kwargs):
        household = content.get("watch") if isinstance(content, dict) else None
        self.watching = household[:256] if isinstance(household, str) and household else None

    async def pipeline_update(self, event):
        self.pending = merge(self.pending, event)
        if self.flush_task is None:
            delay = max(0.0, self.last_sent + 1 / MAX_PER_SECOND - time.monotonic())
            self.flush_task = asyncio.create_task(self._flush(delay))

    async def _flush(self, delay):
        await asyncio.sleep(delay)
        update, self.pending, self.flush_task = self.pending, None, None
        self.last_sent = time.monotonic()
        await self.send_json({"type": "update", **update})
        if self.watching and update["acked"]:
            row = await sync_to_async(lambda: self.readers().household(self.watching))()
            if row is not None:
                row["series"] = row["series"][-WATCH_POINTS:]
                await self.send_json({"type": "household", **row})
