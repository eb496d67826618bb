"""The cloud's reply server: pynng Rep sockets for heartbeats and data.

Each socket is served by several contexts at once, so several batches can
be in flight. A batch is verified (HMAC) before it is decoded, validated,
stored in one Lua call, and only then answered: an ACK never covers data
that is not yet on disk. `handle_heartbeat` and `handle_data` take a frame
and return the reply, so tests call them directly; `serve` runs them on the
sockets until `stop` is set.
"""

import asyncio
import logging
import time
from collections import Counter

import pynng
import redis.exceptions

from cloud_app.postal import locate
from cloud_app.store import StoreRefused
from fogwire import protocol as wire

log = logging.getLogger("fog.cloud")

DASHBOARD_GROUP = "dashboard"
PUBLISH_EVERY_SECONDS = 0.25  # with the page's 4 a second, at most half a second of the freshness budget
RECENT_PUBLISHED = 15  # newest tuples carried by each dashboard update (the page's table)
# Window end -> tuples, so a client can tell how fresh every tuple is (bench e2e). At real time an
# update holds one or two distinct ends; a drained backlog is capped here.
ENDS_MAX = 64
SHUTDOWN_SECONDS = 4.0
HEARTBEAT_WORKERS = 2
# nng drops anything above its own limit without a word; leave room so an
# oversized frame reaches us and gets a reply that says so.
NNG_RECV_MAX = 2 * wire.MAX_FRAME_BYTES


class CloudServer:
    def __init__(self, store, secrets, *, window_seconds=5, legacy_edge=None, channel_layer=None):
        self.store = store
        self.secrets = dict(secrets)
        self.window_ms = window_seconds * 1000
        self.legacy_edge = legacy_edge  # None: legacy v1 is off
        self.channel_layer = channel_layer
        self.counts = Counter()  # this process's own counters (Redis may be down)
        self._update = None  # pending dashboard update, merged until published

    # --- one request ------------------------------------------------------

    async def handle_heartbeat(self, frame):
        if self.legacy_edge and frame == wire.LEGACY_HEARTBEAT:
            return wire.LEGACY_ACK
        try:
            edge, payload = wire.open_frame(frame, self.secrets.get)
            if payload.get("kind") != wire.KIND_HEARTBEAT:
                raise wire.ProtocolError(wire.R_BAD_BODY, f"expected a heartbeat, got {payload.get('kind')!r}")
        except wire.ProtocolError as exc:
            return await self._refuse_frame(frame, exc, "heartbeat")
        backlog = payload.get("backlog") if type(payload.get("backlog")) is int else 0
        paused = payload.get("paused") is True  # optional: the edge's ingest waits for its disk budget
        try:
            await self.store.heartbeat(edge, backlog, paused=paused)
        except redis.exceptions.RedisError as exc:
            log.warning("heartbeat from %s not recorded: Redis: %s", edge, exc)
        self._merge_beat(edge, backlog, paused)
        self.counts["heartbeats"] += 1
        return wire.heartbeat_reply(edge, self.secrets[edge])

    async def handle_data(self, frame):
        if not wire.is_v2(frame):
            if self.legacy_edge:
                return await self._handle_legacy(frame)
            return await self._refuse_frame(frame, wire.ProtocolError(
                wire.R_BAD_FRAME, f"frame of {len(frame)} bytes is not a v2 frame (legacy v1 is off)"), "data")
        try:
            edge, payload = wire.open_frame(frame, self.secrets.get)
            batch = wire.read_batch(edge, payload)
        except wire.ProtocolError as exc:
            return await self._refuse_frame(frame, exc, "data")
        reasons = wire.refusals(batch)
        rows = [row for row, why in zip(zip(batch.ids, batch.households, batch.starts, batch.ends,
                                            batch.averages, batch.counts), reasons) if not why]
        codes = [""] * len(reasons)
        if rows:
            try:
                result = await self.store.store(edge, rows)
            except redis.exceptions.RedisError as exc:
                log.error("batch of %d from %s not stored: Redis: %s", len(batch), edge, exc)
                self.counts[f"refused:{wire.R_STORE_DOWN}"] += 1
                return wire.error_frame(edge, wire.R_STORE_DOWN, "the cloud store is unavailable; retry later")
            except StoreRefused as exc:
                return await self._refuse_frame(frame, wire.ProtocolError(exc.reason, exc.detail), "data")
            # The store's own refusals (ownership, quota) fill the places the limits left acceptable.
            stored = iter(zip(result.postal_codes, result.reasons))
            outcome = [next(stored) if not why else ("", why) for why in reasons]
            codes, reasons = [c for c, _ in outcome], [w for _, w in outcome]
            self.counts["tuples"] += result.new
            self.counts["dedup_hits"] += result.duplicates
            self._merge_update(edge, result, rows)
        refused = Counter(why for why in reasons if why)
        if refused:
            log.warning("edge %s: refused %d of %d tuples: %s", edge, sum(refused.values()), len(reasons),
                        ", ".join(f"{k} x{v}" for k, v in refused.items()))
            await self._count_refusals(refused)
        self.counts["batches"] += 1
        return wire.reply_frame(edge, self.secrets[edge], codes, reasons)

    async def _handle_legacy(self, frame):
        try:
            tid, node, average = wire.read_legacy_data(frame)
        except wire.ProtocolError as exc:
            await self._count_refusals(Counter({exc.reason: 1}))
            log.warning("legacy v1 request refused: %s", exc)
            return f"ERROR: {exc}".encode()
        now = int(time.time() * 1000)
        try:
            result = await self.store.store(self.legacy_edge, [(tid, node, now - self.window_ms, now, average, 1)])
        except redis.exceptions.RedisError as exc:
            log.error("legacy v1 tuple %s not stored: Redis: %s", tid, exc)
            return f"ERROR: {wire.R_STORE_DOWN}".encode()
        except StoreRefused as exc:
            result, reason = None, exc.reason
        else:
            reason = result.reasons[0]
        if reason:
            await self._count_refusals(Counter({reason: 1}))
            return f"ERROR: {reason}".encode()
        self._merge_update(self.legacy_edge, result, [(tid, node, now - self.window_ms, now, average, 1)])
        return wire.legacy_reply(tid, result.postal_codes[0])

    async def _refuse_frame(self, frame, exc, port):
        edge = None
        try:
            edge = wire.split(frame)[0]
        except wire.ProtocolError:
            pass
        log.warning("%s frame of %d bytes from edge %s refused: %s", port, len(frame), edge or "?", exc)
        await self._count_refusals(Counter({exc.reason: 1}))
        return wire.error_frame(edge, exc.reason, exc.detail)

    async def _count_refusals(self, reasons):
        for reason, number in reasons.items():
            self.counts[f"refused:{reason}"] += number
            try:
                await self.store.count(f"refused:{reason}", number)
            except redis.exceptions.RedisError:
                pass  # kept in self.counts; Redis being down is logged where it matters

    # --- dashboard updates ----------------------------------------------

    def _pending_update(self):
        if self._update is None:
            self._update = {"type": "pipeline.update", "acked": 0, "edges": {}, "states": {}, "beats": {},
                            "power": {}, "recent": [], "ends": {}}
        return self._update

    def _merge_beat(self, edge, backlog, paused=False):
        if self.channel_layer is not None:
            update = self._pending_update()
            update["beats"][edge] = {"backlog": backlog, "paused": paused, "ts": int(time.time() * 1000)}
            update["ts"] = int(time.time() * 1000)

    def _merge_update(self, edge, result, rows):
        """Fold a stored batch into the pending update: counts, state sums, the minutes' power added
        (W·ms, as the store's roll-ups), the newest tuples and the count per window end, all from the
        tuples stored for the first time."""
        if self.channel_layer is None or not result.new:
            return
        update = self._pending_update()
        update["acked"] += result.new
        update["edges"][edge] = update["edges"].get(edge, 0) + result.new
        update["states"].update({state: list(sums) for state, sums in result.states.items()})
        fresh = [rows[i] for i in (result.fresh or [])]
        for _, _, start, end, average, _ in fresh:
            minute = str(start // 60000 * 60000)
            update["power"][minute] = update["power"].get(minute, 0.0) + float(average) * (end - start)
            if str(end) in update["ends"] or len(update["ends"]) < ENDS_MAX:
                update["ends"][str(end)] = update["ends"].get(str(end), 0) + 1
        stored = [{"edge": edge, "id": tid, "household": household, "postal_code": code, "state": state,
                   "window_start": start, "window_end": end, "power_w": float(average), "readings": count}
                  for (tid, household, start, end, average, count), (code, state)
                  in ((row, locate(row[1])) for row in fresh[-RECENT_PUBLISHED:])]
        update["recent"] = (stored[::-1] + update["recent"])[:RECENT_PUBLISHED]
        update["ts"] = int(time.time() * 1000)

    async def publish_pending(self):
        """Send the merged update, if any, to the dashboard group. True if one was sent."""
        update, self._update = self._update, None
        if update is None:
            return False
        try:
            await self.channel_layer.group_send(DASHBOARD_GROUP, update)
        except Exception as exc:  # the dashboard is best effort; the data is safe in Redis
            log.warning("dashboard update not published: %s", exc)
            return False
        return True

    # --- sockets ----------------------------------------------------------

    async def serve(self, heartbeat_addr, data_addr, stop, workers=8):
        """Serve until `stop` (an asyncio.Event) is set; finish requests in hand, then return."""
        with pynng.Rep0(listen=heartbeat_addr, recv_max_size=NNG_RECV_MAX) as hb_sock, \
                pynng.Rep0(listen=data_addr, recv_max_size=NNG_RECV_MAX) as data_sock:
            busy = set()
            tasks = [asyncio.create_task(self._worker(hb_sock, self.handle_heartbeat, busy))
                     for _ in range(HEARTBEAT_WORKERS)]
            tasks += [asyncio.create_task(self._worker(data_sock, self.handle_data, busy)) for _ in range(workers)]
            publisher = asyncio.create_task(self._publisher(stop))
            log.info("cloud serving heartbeats on %s and data on %s (%d data workers%s)", heartbeat_addr,
                     data_addr, workers, f", legacy v1 as edge {self.legacy_edge}" if self.legacy_edge else "")
            await stop.wait()
            # Idle workers wait in recv: cancel them. Busy ones finish their
            # request and reply first, within the shutdown budget.
            deadline = time.monotonic() + SHUTDOWN_SECONDS
            while busy and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for task in tasks + [publisher]:
                task.cancel()
            await asyncio.gather(*tasks, publisher, return_exceptions=True)
            if self.channel_layer is not None:
                await self.publish_pending()
        log.info("cloud stopped: %s", dict(self.counts))

    async def _worker(self, sock, handler, busy):
        ctx = sock.new_context()
        me = asyncio.current_task()
        try:
            while True:
                frame = await ctx.arecv()
                busy.add(me)
                try:
                    try:
                        reply = await handler(frame)
                    except Exception:
                        log.exception("request of %d bytes failed", len(frame))
                        reply = wire.error_frame(None, wire.R_INTERNAL, "the cloud failed on this request")
                    await ctx.asend(reply)
                finally:
                    busy.discard(me)
        finally:
            ctx.close()

    async def _publisher(self, stop):
        while not stop.is_set():
            await asyncio.sleep(PUBLISH_EVERY_SECONDS)
            if self.channel_layer is not None:
                await self.publish_pending()
