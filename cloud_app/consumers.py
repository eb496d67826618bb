"""The dashboard's websocket: the current summary on connect, then the cloud's updates.

The cloud publishes a merged update to the group about every quarter second;
each client additionally gets at most MAX_PER_SECOND messages, merged, so a
slow browser never builds a queue; one that reads nothing for
SEND_STALL_SECONDS is closed.

The summary is everything the page shows that updates change: the states,
the edges with each one's last hour, the power per minute and the newest
tuples. A page that reconnects after a drop paints it again, so what it
missed while away is not lost (the updates carry only what changed).
The socket joins the group before the summary is read, so no update falls
between the two; the updates that come in meanwhile are of batches the
summary may already hold. So an update carries, for the states and power
minutes its batches changed, the totals the store has when it is
published, and the page keeps the larger of what it has and what comes
(they only grow): nothing is counted twice. The newest tuples are told
apart as the store does (an edge's household's window), and kept in the
order the store took them.

A client may send {"watch": household} (or {"watch": null}): with each
update that stored tuples, it then also gets that household's newest
windows, read here from the store (a bounded read), so the page's household
view is live without the browser polling. That is all the page ever sends: any
other frame (binary, not JSON, oversized) closes the socket with a close code
and takes it out of the group at once. Anyone can open the socket, and a frame
that crashed the consumer used to skip its disconnect, leaving a dead member
that every update was sent to for the layer's group expiry.

channels-redis drops a group member that was not added again within the
layer's `group_expiry` (settings.CHANNEL_LAYERS), so a member that dies
without leaving costs only that long; a live socket therefore adds itself
again several times within it.

A socket that nothing was sent on for ALIVE_EVERY_SECONDS gets {"type":
"alive"} from this consumer itself, whether the cloud speaks or not. The page
sends nothing it could notice a dead socket by (one the network dropped
half-open: a laptop asleep, a proxy or NAT that forgot it): without these it
could not tell such a socket from a cloud that fell silent, and would wait on
it for ever. With them, silence on the socket means the socket, and the page
opens a new one; the cloud's own ticks (cloud_app/server.py) still tell
whether the cloud is there.
"""

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from redis.exceptions import RedisError

from cloud_app.engine import STORE_ERRORS
from cloud_app.reader import ReaderSource
from cloud_app.server import DASHBOARD_GROUP, add_end
from fogwire.limits import household_problem
from fogwire.ratelog import RateLimitedLog

log = logging.getLogger("fog.cloud")

MAX_PER_SECOND = 4
# Sent on a socket idle this long; the page takes three missed as a dead socket (static/js/dashboard.js). Longer
# than the cloud's TICK_EVERY_SECONDS, so a socket the cloud's ticks keep busy never needs one.
ALIVE_EVERY_SECONDS = 3.0


RECENT_KEEP = 15  # the page's "latest tuples" table
WATCH_POINTS = 24  # newest windows sent to a watching client with each update (two minutes of 5 s windows)
# Windows of the series read for them: twice as many, as a v1 household's list is in the order batches came, not window order.
WATCH_READ = 2 * WATCH_POINTS
# A household's read after an update is shared by this process's sockets watching it that got the same update:
# anyone may open sockets, and each one watching the same household read it on every update. Kept for this many
# households at most (anyone may name any id).
WATCH_SHARED_MAX = 1000
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
# Renewals of a live socket's membership within one group expiry: one or two failed ones (a layer that blips)
# still leave it in the group.
RENEWALS_PER_EXPIRY = 5
# The page's largest frame is {"watch": household}, an id of at most fogwire.limits.MAX_HOUSEHOLD_ID characters, each at most
# 6 when JSON-escaped; anything much larger is not the page's.
MAX_FRAME_CHARS = 4096
# The web server's own bound on a frame (uvicorn --ws-max-size, in the Procfile and docker-compose.yml): the
# consumer sees a frame only once the server has buffered it whole, and uvicorn's default lets every anonymous
# socket hold 16 MiB half-sent. A frame of MAX_FRAME_CHARS characters is at most 4 bytes each in UTF-8.
WS_MAX_BYTES = 4 * MAX_FRAME_CHARS
# A send that has not gone out after this long (a client that reads nothing, its TCP buffers full): the socket is
# closed. uvicorn's own keep-alive ping waits behind the stuck send, so nothing else ever ended such a socket.
SEND_STALL_SECONDS = 30.0
# RFC 6455 close codes for what the page never sends.
CLOSE_UNSUPPORTED = 1003  # a binary frame
CLOSE_INVALID = 1007  # text that is not JSON
CLOSE_TOO_BIG = 1009
CLOSE_STALLED = 1008  # policy violation: a client that does not read what it is sent

refused_log = RateLimitedLog(log, REFUSED_LOG_LINES, REFUSED_LOG_SECONDS)
# Anyone may send junk frames: so many lines, not one a frame.
junk_log = RateLimitedLog(log, REFUSED_LOG_LINES, REFUSED_LOG_SECONDS)


def tuple_key(row):
    """What tells one stored tuple from another, as the store does: its edge's household's window (an edge's ids
    begin again with its database)."""
    return row.get("edge"), row.get("household"), row.get("window_start"), row.get("window_end")


def merge(pending, update):
    """Fold `update` into `pending` (both as published by the cloud server). Counts (acked, edges, ends) add
    up; the states and power are totals, which only grow, so the larger is the newer: updates of two cloud
    processes may arrive in either order."""
    if pending is None:
        pending = {"acked": 0, "edges": {}, "states": {}, "beats": {}, "power": {}, "recent": [], "ends": {}}
    pending["acked"] += update.get("acked", 0)
    for edge, count in update.get("edges", {}).items():
        pending["edges"][edge] = pending["edges"].get(edge, 0) + count
    for minute, wms in update.get("power", {}).items():
        pending["power"][minute] = max(pending["power"].get(minute, 0.0), wms)
    for end, count in update.get("ends", {}).items():  # capped as each update is: merged for a socket that
        add_end(pending["ends"], end, count)  # reads nothing, they grew without bound
    for state, sums in update.get("states", {}).items():  # [households, sum, tuples]: more tuples, newer
        kept = pending["states"].get(state)
        if kept is None or sums[2] >= kept[2]:
            pending["states"][state] = sums
    pending["beats"].update(update.get("beats", {}))
    # Each tuple once, the newest stored first: two cloud processes' updates may come in either order.
    recent, seen = [], set()
    for row in sorted(update.get("recent", []) + pending["recent"], key=lambda r: -r.get("acked_ms", 0)):
        if tuple_key(row) not in seen:
            seen.add(tuple_key(row))
            recent.append(row)
    pending["recent"] = recent[:RECENT_KEEP]
    # The newest publish time of those merged (the page learns the server's clock from it; a watched household is
    # read once per such time for every socket that has it): updates of two processes may come in either order.
    pending["ts"] = max(filter(None, (pending.get("ts"), update.get("ts"))), default=None)
    return pending


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    readers = ReaderSource()
    watched = {}  # household -> (the update it is read after, the read): shared by this process's sockets

    async def connect(self):
        self.pending, self.flush_task, self.last_sent, self.watching = None, None, 0.0, None
        self.joined, self.leaving, self.renew_task, self.alive_task = False, False, None, None
        # Sends are one at a time: the updates' flush and the keep-alive are separate tasks.
        self.send_lock, self.sent_at, self.stall_task = asyncio.Lock(), time.monotonic(), None
        # Accepted only once it can deliver: a socket accepted and then closed looks "live" to the page for a
        # moment, and the page would retry at once, forever, while the channel layer is down.
        try:
            await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
            self.joined = True
            # Not thread-sensitive: asgiref's one shared thread would take every socket's reads of the store in
            # turn, so one stalled read held up every other page (the reader's Redis clients are thread-safe).
            first = await sync_to_async(lambda: self.readers().summary(), thread_sensitive=False)()
        except LAYER_ERRORS as exc:
            refused_log.warning("dashboard websocket refused: %s", exc)
            await self.close()
            return
        self.renew_task = asyncio.create_task(self._renew())
        try:
            await self.accept()
            await self.send_json({"type": "summary", **first})
        except SEND_ERRORS:
            return  # the browser left while the summary was read; its disconnect follows
        self.alive_task = asyncio.create_task(self._keep_alive())

    async def send_json(self, content, close=False):
        """Every message of this consumer goes out here, one at a time. One that has not gone out within
        SEND_STALL_SECONDS closes the socket and fails as a send to a socket that went away does."""
        async with self.send_lock:
            try:
                await asyncio.wait_for(super().send_json(content, close), SEND_STALL_SECONDS)
            except TimeoutError:
                # Closed by a task of its own: the close ends this socket's flush, which may be the caller.
                self.stall_task = asyncio.create_task(self._refuse(
                    CLOSE_STALLED, f"nothing it was sent for {SEND_STALL_SECONDS:g} s", verb="read"))
                raise ConnectionAbortedError("the client reads nothing") from None
            self.sent_at = time.monotonic()

    async def disconnect(self, code):
        await self._leave()

    async def websocket_receive(self, message):
        """Every frame, instead of channels' decoding, which raises on a binary frame or on text that is not
        JSON: the exception ended the application without its disconnect."""
        text = message.get("text")
        if not isinstance(text, str):
            return await self._refuse(CLOSE_UNSUPPORTED, "a binary frame")
        if len(text) > MAX_FRAME_CHARS:
            return await self._refuse(CLOSE_TOO_BIG, f"a frame of {len(text)} characters")
        try:
            content = await self.decode_json(text)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
            return await self._refuse(CLOSE_INVALID, "a text frame that is not JSON")
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        household = content.get("watch") if isinstance(content, dict) else None
        # No household has another id: the store is not asked for one (`{"watch": null}` stops watching).
        self.watching = None if household_problem(household) else household

    async def _refuse(self, code, what, verb="sent"):
        client = self.scope.get("client") or ("?", "?")
        junk_log.warning("dashboard websocket from %s:%s %s %s; closed with %d", *client[:2], verb, what, code)
        await self._leave()  # now: a client that never answers the close must not stay a member meanwhile
        try:
            await self.close(code)
        except SEND_ERRORS:
            pass  # already gone; its disconnect follows

    async def _leave(self):
        """Ends the socket's flush and renewals, then takes it out of the group: after them, since a renewal
        still in flight would add it back. Runs once, at the first of a refused frame or the disconnect."""
        if getattr(self, "leaving", True):
            return  # left already, or never got as far as connect
        self.leaving = True
        tasks = [task for task in (self.flush_task, self.renew_task, self.alive_task) if task is not None]
        self.flush_task = self.renew_task = self.alive_task = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=FLUSH_CANCEL_SECONDS)
        if self.joined:
            self.joined = False
            try:
                await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)
            except LAYER_ERRORS:
                pass  # the layer is down; its group forgets this channel after its expiry

    async def _renew(self):
        """Adds the socket to the group again well within the layer's group expiry, which would otherwise drop
        a socket open longer than that while it is still live."""
        every = self.channel_layer.group_expiry / RENEWALS_PER_EXPIRY
        while not self.leaving:
            await asyncio.sleep(every)
            if self.leaving:
                return  # a cancel swallowed in the sleep's last moment (cloud_app's layer, Python 3.11)
            try:
                await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
            except LAYER_ERRORS as exc:
                refused_log.warning("dashboard websocket could not renew its group membership: %s", exc)

    async def _keep_alive(self):
        """{"type": "alive"} on a socket nothing was sent on for ALIVE_EVERY_SECONDS (see the module's docstring)."""
        while not self.leaving:
            await asyncio.sleep(max(0.0, self.sent_at + ALIVE_EVERY_SECONDS - time.monotonic()))
            if self.leaving:
                return
            if time.monotonic() - self.sent_at >= ALIVE_EVERY_SECONDS:
                try:
                    await self.send_json({"type": "alive"})
                except SEND_ERRORS:
                    return  # the socket is gone; its disconnect follows

    async def pipeline_update(self, event):
        if self.leaving:
            return  # an update already in the channel when the socket left the group
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
                    await self._send_watched(update.get("ts"))
        except SEND_ERRORS:
            self.pending = None  # the socket is gone; its disconnect follows
        finally:
            if self.flush_task is asyncio.current_task():
                self.flush_task = None

    async def _send_watched(self, after):
        """The watched household's newest windows, read after the update published at `after` (its "ts"): once for
        every socket of this process that got that update."""
        watching = self.watching
        entry = self.watched.get(watching)
        if (entry is None or after is None or entry[0] != after
                or entry[1].get_loop() is not asyncio.get_running_loop()):
            if len(self.watched) >= WATCH_SHARED_MAX:
                self.watched.clear()
            read = asyncio.ensure_future(sync_to_async(lambda: self.readers().household(watching, points=WATCH_READ),
                                                       thread_sensitive=False)())
            # Its failure is each waiting socket's to handle; with none left waiting, asyncio would log it at length.
            read.add_done_callback(lambda done: done.cancelled() or done.exception())
            self.watched[watching] = entry = (after, read)
        try:
            row = await asyncio.shield(entry[1])  # a socket that leaves meanwhile does not cancel the others' read
        except STORE_ERRORS:
            if self.watched.get(watching) is entry:
                del self.watched[watching]  # read again by the next socket, or the next update
            return
        if row is not None:
            await self.send_json({"type": "household", **row, "series": row["series"][-WATCH_POINTS:]})
