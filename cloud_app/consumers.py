"""The dashboard's websocket: the current summary on connect, then the cloud's updates.

The cloud publishes a merged update to the group about every quarter second;
each client additionally gets at most MAX_PER_SECOND messages, merged, so a
slow browser never builds a queue.

The summary is everything the page shows that updates only add to: the
states, the edges with each one's last hour, the power per minute and the
newest tuples. A page that reconnects after a drop paints it again, so what
it missed while away is not lost (the updates carry only what changed).

A client may send {"watch": household} (or {"watch": null}): with each
update that stored tuples, it then also gets that household's newest
windows, read here from the store (a bounded read), so the page's household
view is live without the browser polling.
"""

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from redis.exceptions import RedisError

from cloud_app.engine import STORE_ERRORS
from cloud_app.reader import ReaderSource
from cloud_app.server import DASHBOARD_GROUP
from fogwire.ratelog import RateLimitedLog

log = logging.getLogger("fog.cloud")

MAX_PER_SECOND = 4


RECENT_KEEP = 15  # the page's "latest tuples" table
WATCH_POINTS = 24  # newest windows sent to a watching client with each update (two minutes of 5 s windows)
# Every page retries while the channel layer or the store is down: one line per attempt would repeat every
# few seconds per open page.
REFUSED_LOG_LINES = 5
REFUSED_LOG_SECONDS = 60.0
# The flush cancelled at a disconnect ends at its next await; it gets this long before the consumer goes on
# regardless (a send it still had in hand then fails quietly inside it).
FLUSH_CANCEL_SECONDS = 1.0
# A send to a socket that went away (uvicorn's ClientDisconnected is an OSError; a send after the close is a
# RuntimeError): the disconnect that follows ends the consumer.
SEND_ERRORS = (OSError, RuntimeError)
LAYER_ERRORS = (RedisError, OSError, *STORE_ERRORS)

refused_log = RateLimitedLog(log, REFUSED_LOG_LINES, REFUSED_LOG_SECONDS)


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
        self.joined = False
        # Accepted only once it can deliver: a socket accepted and then closed looks "live" to the page for a
        # moment, and the page would retry at once, forever, while the channel layer is down.
        try:
            await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
            self.joined = True
            first = await sync_to_async(lambda: self.readers().summary())()
        except LAYER_ERRORS as exc:
            refused_log.warning("dashboard websocket refused: %s", exc)
            await self.close()
            return
        try:
            await self.accept()
            await self.send_json({"type": "summary", **first})
        except SEND_ERRORS:
            pass  # the browser left while the summary was read; its disconnect follows

    async def disconnect(self, code):
        task, self.flush_task = getattr(self, "flush_task", None), None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=FLUSH_CANCEL_SECONDS)
        if getattr(self, "joined", False):
            try:
                await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)
            except LAYER_ERRORS:
                pass  # the layer is down; its group forgets this channel after its expiry

    async def receive_json(self, content, **kwargs):
        household = content.get("watch") if isinstance(content, dict) else None
        self.watching = household[:256] if isinstance(household, str) and household else None

    async def pipeline_update(self, event):
        self.pending = merge(self.pending, event)
        if self.flush_task is None:
            self.flush_task = asyncio.create_task(self._flush())

    async def _flush(self):
        """The socket's one sender: while a send or a read waits, updates merge into self.pending, and go out
        together once it is done, at most MAX_PER_SECOND a second."""
        try:
            while self.pending is not None:
                await asyncio.sleep(max(0.0, self.last_sent + 1 / MAX_PER_SECOND - time.monotonic()))
                update, self.pending = self.pending, None
                self.last_sent = time.monotonic()
                await self.send_json({"type": "update", **update})
                if self.watching and update["acked"]:
                    await self._send_watched()
        except SEND_ERRORS:
            self.pending = None  # the socket is gone; its disconnect follows
        finally:
            if self.flush_task is asyncio.current_task():
                self.flush_task = None

    async def _send_watched(self):
        try:
            row = await sync_to_async(lambda: self.readers().household(self.watching))()
        except STORE_ERRORS:
            return  # the next update that stores tuples reads it again
        if row is not None:
            row["series"] = row["series"][-WATCH_POINTS:]
            await self.send_json({"type": "household", **row})
