"""The dashboard's websocket: the current summary on connect, then the cloud's updates.

The cloud publishes a merged update to the group about every half second;
each client additionally gets at most MAX_PER_SECOND messages, merged, so a
slow browser never builds a queue.
"""

import asyncio
import time

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from cloud_app.reader import ReaderSource
from cloud_app.server import DASHBOARD_GROUP

MAX_PER_SECOND = 2


def merge(pending, update):
    """Fold `update` into `pending` (both as published by the cloud server)."""
    if pending is None:
        return {"acked": update.get("acked", 0), "edges": dict(update.get("edges", {})),
                "states": dict(update.get("states", {})), "beats": dict(update.get("beats", {})),
                "ts": update.get("ts")}
    pending["acked"] += update.get("acked", 0)
    for edge, count in update.get("edges", {}).items():
        pending["edges"][edge] = pending["edges"].get(edge, 0) + count
    pending["states"].update(update.get("states", {}))
    pending["beats"].update(update.get("beats", {}))
    pending["ts"] = update.get("ts")
    return pending


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    readers = ReaderSource()

    async def connect(self):
        self.pending, self.flush_task, self.last_sent = None, None, 0.0
        await self.accept()
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        summary = await sync_to_async(lambda: self.readers().summary())()
        await self.send_json({"type": "summary", **summary})

    async def disconnect(self, code):
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)
        if self.flush_task:
            self.flush_task.cancel()

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
