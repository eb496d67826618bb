"""The cloud's reply server: pynng Rep sockets for heartbeats and data.

Each socket is served by several contexts at once, so several batches can
be in flight. A batch is verified (HMAC) before it is decoded, validated,
stored in one Lua call, and only then answered, with a reply bound to the
request's nonce: an ACK never covers data that is not yet on disk, and
never another request's. `handle_heartbeat` and `handle_data` take a frame
and return the reply, so tests call them directly; `serve` runs them on the
sockets until `stop` is set.

Before any of that, nng itself drops a message longer than its port's
limit (wire.MAX_FRAME_BYTES plus a little headroom, so a slightly larger
frame still gets a reply that says so) without buffering it, and each port
takes at most `max_connections` peers: memory is bounded before anyone is
authenticated. With a TLS config both ports speak tls+tcp.
"""

import asyncio
import logging
import time
from collections import Counter

import pynng
from redis.exceptions import RedisError

from cloud_app.engine import STORE_ERRORS
from cloud_app.postal import locate
from cloud_app.reader import page_minutes
from cloud_app.store import BEAT_NEW, BEAT_REPLAYED, StoreRefused, window_minutes
from fogwire import protocol as wire
from fogwire.ratelog import RateLimitedLog

log = logging.getLogger("fog.cloud")

DASHBOARD_GROUP = "dashboard"
PUBLISH_EVERY_SECONDS = 0.25  # with the page's 4 a second, at most half a second of the freshness budget
# With nothing to say for this long, the cloud says so all the same (an empty update): a page that hears nothing
# for several of these knows the cloud, not its own feed, is away (static/js/dashboard.js).
TICK_EVERY_SECONDS = 2.0
RECENT_PUBLISHED = 15  # newest tuples carried by each dashboard update (the page's table)
# Window end -> tuples, so a client can tell how fresh every tuple is (bench e2e). At real time an update holds
# a few distinct ends (staggered windows end every 0.1 s: edge_app/windows.py); a drained backlog is capped here,
# past a minute of staggered ends.
ENDS_MAX = 640


def add_end(ends, end, count):
    """Count `count` tuples at window end `end` in `ends`, which holds at most ENDS_MAX ends (the first ones)."""
    if end in ends or len(ends) < ENDS_MAX:
        ends[end] = ends.get(end, 0) + count
SHUTDOWN_SECONDS = 4.0
HEARTBEAT_WORKERS = 2
# nng drops anything above its own limit without a word (and without
# buffering it); leave a little room so a frame just over the protocol's
# limit reaches us and gets a reply that says so.
NNG_HEADROOM = 64 * 1024
NNG_RECV_MAX = {"heartbeat": wire.MAX_HEARTBEAT_BYTES + NNG_HEADROOM, "data": wire.MAX_DATA_BYTES + NNG_HEADROOM}
LEGACY_DETAIL = 120  # characters of a legacy refusal sent back and logged
# A refused frame needs no secret to send (a replayed one is a known edge's, but anyone on the path can send
# it). It is answered at once; its count is saved beside the reply when none was saved for this long, else by
# the publisher's next round, one save at a time and one write per reason however many came; its warning is
# one of at most REFUSED_LOG_LINES a REFUSED_LOG_SECONDS for its edge (or none) and reason. Counted and logged
# per frame, a flood would cost the store an fsync'd write each (appendfsync always), ahead of the edges'
# batches, and fill the disk with log.
COUNTS_SAVE_SECONDS = 1.0
REFUSED_LOG_LINES = 10
REFUSED_LOG_SECONDS = 60.0
# A peer that does not read its replies fills its TCP buffers, and the reply's send would then wait forever,
# holding a worker: one such connection, no secret needed, stopped a port. The reply gets this long, an
# edge's wait for it (edge_app.sender.ACK_TIMEOUT_MS: later it sends the request again anyway), then the
# peer's connection is closed.
REPLY_SEND_SECONDS = 3.0
# runcloud checks the store's persistence at start; a CONFIG SET can turn it off under a running cloud, so the
# publisher asks again this often. While it is off, batches are answered store-unavailable: an ACK must not
# cover a write a Redis crash would lose, and the edges keep what is not acknowledged.
DURABILITY_CHECK_SECONDS = 30.0
PIPE_TABLE_SLACK = 16  # peers pynng may list beyond twice the limit before _admit prunes its table


class CloudServer:
    def __init__(self, store, secrets, *, max_connections, window_seconds=5, legacy_edge=None, channel_layer=None,
                 watch_durability=True):
        """`max_connections`: peers per port (FOG_CLOUD_MAX_CONNECTIONS); each may hold one message of
        NNG_RECV_MAX in memory before it is authenticated. `watch_durability`: check_durability now and then
        (off under runcloud --allow-volatile)."""
        self.store = store
        self.secrets = dict(secrets)
        self.max_connections = max_connections
        self.replays = wire.ReplayGuard()
        self.window_ms = window_seconds * 1000
        self.legacy_edge = legacy_edge  # None: legacy v1 is off
        self.channel_layer = channel_layer
        self.counts = Counter()  # this process's own counters (Redis may be down)
        self.unsaved = Counter()  # refusal counts not yet added to the store's (save_counts)
        self.saved_at = -COUNTS_SAVE_SECONDS  # monotonic time of the last save_counts
        # The one save in flight (_start_save; _last_save waits for it before its own): a task of its own, so
        # the publisher's end leaves it whole, and never two at once copying the same counts.
        self._saving = None
        self.refused_logs = {}  # (known edge or None, reason) -> RateLimitedLog
        self._unpublished = 0  # dashboard updates not published since the channel layer went down
        self.admitted = {}  # id(socket) -> {pipe id: pipe} of the peers _admit let in (see there)
        self.watch_durability, self.volatile, self.durability_checked = watch_durability, "", time.monotonic()
        self._update = None  # pending dashboard update, merged until published
        # The states and power minutes of an update whose totals the store did not give: read with the next
        # update that stored a batch (the store is back), not before: beats reach the page during an outage
        # too, and an outage must cost no reads.
        self._unread = (set(), set())
        self.published_at = time.monotonic()  # of the last update published, or tick tried (TICK_EVERY_SECONDS)

    # --- one request ------------------------------------------------------

    async def handle_heartbeat(self, frame):
        if self.legacy_edge and frame == wire.LEGACY_HEARTBEAT:
            return wire.LEGACY_ACK
        if frame[:4] == wire.MAGIC_V2:
            return await self._refuse_v2(frame, "heartbeat")
        edge = None
        try:
            edge, nonce, payload = wire.open_request(frame, self.secrets.get, wire.KIND_HEARTBEAT)
            state = wire.read_heartbeat(payload)
            if not self.replays.fresh(edge, nonce):
                raise wire.ProtocolError(wire.R_REPLAYED, "this heartbeat was seen before")
        except wire.ProtocolError as exc:
            return await self._refuse_frame(frame, exc, "heartbeat", edge or exc.edge)
        try:
            taken = await self.store.heartbeat(edge, state, nonce=nonce, sent_ms=payload["ts"])
            if taken == BEAT_REPLAYED:
                return await self._refuse_frame(frame, wire.ProtocolError(
                    wire.R_REPLAYED, "this heartbeat was taken before (by this cloud or another replica)"),
                    "heartbeat", edge)
        except STORE_ERRORS as exc:
            log.warning("heartbeat from %s not recorded: Redis: %s", edge, exc)
            taken = BEAT_NEW  # the live page still hears of it
        probes, held = wire.read_probes(payload), None
        try:
            store = await self.store.store_id(edge)
            if probes:
                held = await self.store.held(edge, probes)
        except STORE_ERRORS:
            store = None  # the reply names none: the edge keeps the one it has
        if taken == BEAT_NEW:  # an older beat that came late must not show its state on the live page either
            self._merge_beat(edge, state)
        self.counts["heartbeats"] += 1
        return wire.heartbeat_reply(edge, self.secrets[edge], nonce, store=store, held=held)

    async def handle_data(self, frame):
        if frame[:4] == wire.MAGIC_V2:
            return await self._refuse_v2(frame, "data")
        if frame[:3] != wire.MAGIC[:3] and self.legacy_edge:
            return await self._handle_legacy(frame)
        edge = None
        try:
            edge, nonce, payload = wire.open_request(frame, self.secrets.get, wire.KIND_BATCH)
            batch = wire.read_batch(edge, payload)
        except wire.ProtocolError as exc:
            return await self._refuse_frame(frame, exc, "data", edge or exc.edge)
        reasons = wire.refusals(batch)
        rows = [row for row, why in zip(zip(batch.ids, batch.households, batch.starts, batch.ends,
                                            batch.averages, batch.counts), reasons) if not why]
        codes = [""] * len(reasons)
        if rows:
            try:
                result = await self._store(edge, rows)
            except STORE_ERRORS as exc:  # one line a batch would repeat every half second while it lasts
                self._refused_log(edge, wire.R_STORE_DOWN).warning("batch of %d from %s not stored: Redis: %s",
                                                                   len(batch), edge, exc)
                self.counts[f"refused:{wire.R_STORE_DOWN}"] += 1
                return wire.error_frame(edge, nonce, wire.R_STORE_DOWN, "the cloud store is unavailable; retry later",
                                        self.secrets[edge])
            except StoreRefused as exc:
                return await self._refuse_frame(frame, wire.ProtocolError(exc.reason, exc.detail), "data", edge)
            # The store's own refusals (ownership, quota) fill the places the limits left acceptable.
            stored = iter(zip(result.postal_codes, result.reasons))
            outcome = [next(stored) if not why else ("", why) for why in reasons]
            codes, reasons = [c for c, _ in outcome], [w for _, w in outcome]
            self.counts["tuples"] += result.new
            self.counts["dedup_hits"] += result.duplicates
            self._merge_update(edge, result, rows)
        refused = Counter(why for why in reasons if why)
        if refused:
            # Limited like a refused frame's: a replayed batch (anyone on the path) or an edge resending one
            # brings its refusals again.
            self._refused_log(edge, "tuples").warning(
                "edge %s: refused %d of %d tuples: %s", edge, sum(refused.values()), len(reasons),
                ", ".join(f"{k} x{v}" for k, v in refused.items()))
            self._count_refusals(refused)
        self.counts["batches"] += 1
        return wire.reply_frame(edge, self.secrets[edge], nonce, codes, reasons)

    async def _handle_legacy(self, frame):
        """A v1 request: no authentication at all, so the same limits as v2 and nothing echoed at length."""
        now = int(time.time() * 1000)
        try:
            tid, node, average = wire.read_legacy_data(frame)
            row = (tid, node, now - self.window_ms, now, average, 1)
            why = wire.refusals(wire.Batch(self.legacy_edge, *([value] for value in row)), now)[0]
            if why:
                raise wire.ProtocolError(why, f"v1 tuple {tid} refused")
        except wire.ProtocolError as exc:
            self._count_refusals(Counter({exc.reason: 1}))
            message = f"ERROR: {exc}"[:LEGACY_DETAIL]
            self._refused_log(None, exc.reason).warning("legacy v1 request of %d bytes refused: %s", len(frame), message)
            return message.encode()
        try:
            result = await self._store(self.legacy_edge, [row], by_id=True)
        except STORE_ERRORS as exc:  # anyone may send v1 frames: so many lines, not one a frame
            self.counts[f"refused:{wire.R_STORE_DOWN}"] += 1
            self._refused_log(None, wire.R_STORE_DOWN).warning("legacy v1 tuple %s not stored: Redis: %s", tid, exc)
            return f"ERROR: {wire.R_STORE_DOWN}".encode()
        except StoreRefused as exc:
            result, reason = None, exc.reason
        else:
            reason = result.reasons[0]
        if reason:
            self._count_refusals(Counter({reason: 1}))
            return f"ERROR: {reason}".encode()
        self._merge_update(self.legacy_edge, result, [(tid, node, now - self.window_ms, now, average, 1)])
        return wire.legacy_reply(tid, result.postal_codes[0])

    async def _store(self, edge, rows, **options):
        """The store's write, refused as a store that is down while it does not keep writes durably
        (check_durability): no answer may acknowledge a write a crash would lose."""
        if self.volatile:
            raise RedisError(f"the store does not keep writes durably ({self.volatile})")
        return await self.store.store(edge, rows, **options)

    async def _refuse_v2(self, frame, port):
        exc = wire.ProtocolError(wire.R_BAD_VERSION, "a protocol v2 edge: upgrade it to v3")
        self._refused_log(None, exc.reason).warning("%s frame of %d bytes refused: %s", port, len(frame), exc)
        self._count_refusals(Counter({exc.reason: 1}))
        return wire.v2_upgrade_reply(frame)

    async def _refuse_frame(self, frame, exc, port, edge=None):
        """An error reply. Tagged (the edge may act on it) only if the request was authenticated (`edge`)."""
        shown = edge
        if shown is None:
            try:
                shown = wire.split(frame).edge
            except wire.ProtocolError:
                pass
        # By edge too: a flood of junk (no edge) must not hide a known edge's bad tag, nor a replayed frame
        # of that edge (anyone can send it again) flood the log.
        self._refused_log(edge, exc.reason).warning("%s frame of %d bytes from edge %s refused: %s", port,
                                                    len(frame), shown or "?", exc)
        self._count_refusals(Counter({exc.reason: 1}))
        return wire.error_frame(shown, wire.request_nonce(frame), exc.reason, exc.detail,
                                self.secrets.get(edge) if edge else None)

    def _refused_log(self, edge, reason):
        limited = self.refused_logs.get((edge, reason))
        if limited is None:  # the configured edges and the protocol's few words: this stays small
            limited = self.refused_logs[edge, reason] = RateLimitedLog(log, REFUSED_LOG_LINES, REFUSED_LOG_SECONDS)
        return limited

    def _count_refusals(self, reasons):
        for reason, number in reasons.items():
            self.counts[f"refused:{reason}"] += number
            self.unsaved[f"refused:{reason}"] += number
        self._start_save()  # beside the reply, which does not wait for it

    def _start_save(self):
        """Save the counts in a task of its own, unless one was saved within COUNTS_SAVE_SECONDS or is in flight."""
        quiet = time.monotonic() - self.saved_at >= COUNTS_SAVE_SECONDS
        if quiet and self.unsaved and (self._saving is None or self._saving.done()):
            self._saving = asyncio.create_task(self.save_counts())

    async def save_counts(self):
        """Add the refusal counts taken since the last save to the store's. Counts the store did not take (Redis
        away) stay for the next round; on a cluster whose nodes took some of them, those are added again: a
        counter may count a refusal twice, or lose a round of them in a crash, never data."""
        if not self.unsaved:
            return
        self.saved_at = time.monotonic()
        counts = Counter(self.unsaved)
        try:
            await self.store.add_counts(counts)
        except STORE_ERRORS:
            return  # Redis being down is logged where it matters: a batch not stored
        except Exception:  # as a dashboard round: the next one follows
            log.exception("saving the refusal counts failed; the next round tries again")
            return
        self.unsaved.subtract(counts)
        self.unsaved = +self.unsaved  # no await since the subtraction: whatever came meanwhile is kept

    # --- dashboard updates ----------------------------------------------

    def _pending_update(self):
        if self._update is None:
            # states and power (epoch minutes) name what the batches changed; the update carries their totals
            # as the store has them when it is published.
            self._update = {"type": "pipeline.update", "acked": 0, "edges": {}, "states": set(), "beats": {},
                            "power": set(), "recent": [], "ends": {}}
        return self._update

    def _merge_beat(self, edge, state):
        if self.channel_layer is not None:
            update = self._pending_update()
            update["beats"][edge] = {"backlog": state.get("backlog", 0), "paused": bool(state.get("paused")),
                                     "ts": int(time.time() * 1000)}
            update["ts"] = int(time.time() * 1000)

    def _merge_update(self, edge, result, rows):
        """Fold a stored batch into the pending update: counts, the states and power minutes it changed (their
        totals are read when it is published), the newest tuples and the count per window end, all from the
        tuples stored for the first time."""
        if self.channel_layer is None or not result.new:
            return
        update = self._pending_update()
        update["acked"] += result.new
        update["edges"][edge] = update["edges"].get(edge, 0) + result.new
        update["states"].update(result.states)
        fresh = [rows[i] for i in (result.fresh or [])]
        # Each minute a window spans, within the page's hour: a backlog's older minutes (or a long window's) would
        # only make the publisher read keys that are not there or not shown.
        first, last = _page_minutes()
        for _, _, start, end, _, _ in fresh:  # clipped again when published
            update["power"].update(window_minutes(start, end, first, last))
            add_end(update["ends"], str(end), 1)
        stored = [{"edge": edge, "id": tid, "household": household, "postal_code": code, "state": state,
                   "window_start": start, "window_end": end, "power_w": float(average), "readings": count,
                   "acked_ms": result.acked_ms}
                  for (tid, household, start, end, average, count), (code, state)
                  in ((row, locate(row[1])) for row in fresh[-RECENT_PUBLISHED:])]
        update["recent"] = (stored[::-1] + update["recent"])[:RECENT_PUBLISHED]
        update["ts"] = int(time.time() * 1000)

    async def publish_tick(self):
        """Nothing new to publish for a while: an empty update all the same, so a page can tell a quiet
        cloud from one that is away. Tried once a period; a channel layer that refuses it is the next real
        update's to report."""
        self.published_at = time.monotonic()
        try:
            await self.channel_layer.group_send(DASHBOARD_GROUP, {"type": "pipeline.update",
                                                                  "ts": int(time.time() * 1000)})
        except Exception:  # noqa: BLE001 -- best effort, as the updates
            pass

    async def publish_pending(self):
        """Send the merged update, if any, to the dashboard group. True if one was sent."""
        update, self._update = self._update, None
        if update is None:
            return False
        if update["acked"] and (self._unread[0] or self._unread[1]):  # it stored a batch: the store is back
            (states, minutes), self._unread = self._unread, (set(), set())
            update["states"] |= states
            update["power"] |= minutes
        first, last = _page_minutes()  # minutes kept for a later read may have left the page's hour since
        minutes = {m for m in update["power"] if first <= m <= last}
        totals, power = {}, {}
        try:
            # A batch changed its shard's figures; the page shows the totals over every shard, and keeps the
            # larger of them and what it has: had it added what the batches added, a page whose summary was
            # read after they were stored would count it twice.
            if update["states"] or minutes:
                totals, power = await self.store.update_totals(update["states"], minutes)
        except STORE_ERRORS as exc:
            # Read with the next update that stores a batch (no later batch need touch the same minute); the
            # page keeps what it has meanwhile.
            self._refused_log(None, "dashboard-totals").warning("dashboard update without its totals: Redis: %s", exc)
            self._unread[0].update(update["states"])
            self._unread[1].update(minutes)
        update["states"] = {state: list(sums) for state, sums in totals.items()}
        update["power"] = {str(minute * 60000): wms for minute, wms in power.items()}
        # One line when the channel layer goes down and one when it is back, through the refusals' limiter so a
        # flapping layer can't flood the log either; a line a round would be four a second.
        missed = self._unpublished
        try:
            await self.channel_layer.group_send(DASHBOARD_GROUP, update)
        except Exception as exc:  # the dashboard is best effort; the data is safe in Redis
            if not missed:
                self._refused_log(None, "dashboard-unpublished").warning(
                    "dashboard updates not published (the live page catches up when it reconnects): %s", exc)
            self._unpublished = missed + 1
            self.counts["dashboard_unpublished"] += 1
            return False
        self.published_at = time.monotonic()
        if missed:
            self._unpublished = 0
            self._refused_log(None, "dashboard-unpublished").warning(
                "dashboard updates are published again; %d were not", missed)
        return True

    # --- sockets ----------------------------------------------------------

    def _socket(self, address, port, tls):
        sock = pynng.Rep0(recv_max_size=NNG_RECV_MAX[port], **({"tls_config": tls} if tls else {}))
        self.admitted[id(sock)] = {}
        sock.add_pre_pipe_connect_cb(self._admit)
        sock.add_post_pipe_remove_cb(self._removed)
        try:
            sock.listen(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def _admit(self, pipe):
        """nng's pre-connect hook: close a peer beyond `max_connections` on its port before it sends a byte.

        The count is the server's own list of the peers it let in, pruned of closed ones when full. pynng's
        `socket.pipes` keeps peers that closed as fast as they connected (nng's add and remove events can come
        in either order), and counting those let a burst of quick connections lock every edge out for good.
        pynng calls this and _removed for one socket at a time."""
        admitted = self.admitted[id(pipe.socket)]
        # pynng's own table of peers keeps those, and those a received message named after they left
        # (arecv_msg): anyone connecting, sending and leaving in a loop grew it without end. Pruned here, under
        # the lock pynng holds for this call and for every change it makes to the table.
        table = pipe.socket._pipes
        if len(table) > 2 * self.max_connections + PIPE_TABLE_SLACK:
            for number, known in list(table.items()):
                if number != pipe.id and not _open(known):
                    del table[number]
        if len(admitted) >= self.max_connections:
            for number, known in list(admitted.items()):
                if not _open(known):
                    del admitted[number]
        if len(admitted) >= self.max_connections:
            self.counts["connections_refused"] += 1
            pipe.close()
            return
        admitted[pipe.id] = pipe

    def _removed(self, pipe):
        self.admitted[id(pipe.socket)].pop(pipe.id, None)

    async def serve(self, heartbeat_addr, data_addr, stop, workers=8, tls=None):
        """Serve until `stop` (an asyncio.Event) is set; finish requests in hand, then return.

        `tls` (a pynng.TLSConfig in server mode) is needed for tls+tcp:// addresses.
        """
        with self._socket(heartbeat_addr, "heartbeat", tls) as hb_sock, \
                self._socket(data_addr, "data", tls) as data_sock:
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
            await self._last_save()
            if self.channel_layer is not None:
                try:
                    await self.publish_pending()
                except Exception:  # one bad round must not end the dashboard's feed for the server's life
                    log.exception("dashboard update round failed; the next one follows")
        log.info("cloud stopped: %s", dict(self.counts) or "no frame handled")

    async def _worker(self, sock, handler, busy):
        ctx = sock.new_context()
        me = asyncio.current_task()
        try:
            # A cancel can be lost: Python 3.11's wait_for under redis-py's writes
            # (cpython#86296), and pynng's aio wait when its receive or send completes
            # as the cancel comes, return the result instead. A worker with a cancel
            # outstanding stops here instead of waiting for the next request.
            while not me.cancelling():
                message = await ctx.arecv_msg()
                frame = message.bytes
                busy.add(me)
                try:
                    try:
                        reply = await handler(frame)
                    except Exception:  # whoever sends such frames sets how often: not one traceback each
                        self._refused_log(None, wire.R_INTERNAL).exception("request of %d bytes failed", len(frame))
                        reply = wire.error_frame(None, wire.request_nonce(frame), wire.R_INTERNAL,
                                                 "the cloud failed on this request")
                    try:
                        await asyncio.wait_for(ctx.asend(reply), REPLY_SEND_SECONDS)
                    except TimeoutError:
                        ctx.close()  # its send may still be queued: a context of its own for the next request
                        ctx = sock.new_context()
                        self._drop_reader(message.pipe)
                finally:
                    busy.discard(me)
        finally:
            ctx.close()

    def _drop_reader(self, pipe):
        self.counts["replies_unread"] += 1
        self._refused_log(None, "reply-unread").warning(
            "a peer did not take its reply within %.0f s; its connection is closed", REPLY_SEND_SECONDS)
        try:
            if pipe is not None:  # None: pynng could not tell the message's peer, which had gone already
                pipe.close()
        except pynng.NNGException:
            pass  # it went by itself

    async def _last_save(self):
        """On the way out: the save in flight, then what is left, within SHUTDOWN_SECONDS."""
        async def in_turn():
            if self._saving is not None:
                await self._saving
            await self.save_counts()

        try:
            await asyncio.wait_for(in_turn(), SHUTDOWN_SECONDS)
        except TimeoutError:
            pass
        if self.unsaved:
            log.warning("refusal counts not saved to the store (it did not answer): %s", dict(self.unsaved))

    async def check_durability(self):
        """Whether the store still fsyncs every write and evicts no key: self.volatile is '' or what is wrong.
        A store that can't be asked keeps the last verdict (its outage is answered on its own)."""
        self.durability_checked = time.monotonic()
        try:
            problem = await asyncio.wait_for(self.store.check_durable(), SHUTDOWN_SECONDS)
        except (TimeoutError, *STORE_ERRORS):
            return self.volatile
        if problem and not self.volatile:
            log.error("the cloud store stopped keeping writes durably: %s. Batches are answered 'store-unavailable' "
                      "(the edges keep them) until it does again", problem)
        elif self.volatile and not problem:
            log.info("the cloud store keeps writes durably again; batches are stored")
        self.volatile = problem
        return problem

    async def _publisher(self, stop):
        while not stop.is_set():
            await asyncio.sleep(PUBLISH_EVERY_SECONDS)
            if self.watch_durability and time.monotonic() - self.durability_checked >= DURABILITY_CHECK_SECONDS:
                await self.check_durability()
            self._start_save()
            for limited in self.refused_logs.values():
                limited.flush()  # a flood that stopped is told of too
            if self.channel_layer is not None:
                try:
                    if self._update is None and time.monotonic() - self.published_at >= TICK_EVERY_SECONDS:
                        await self.publish_tick()
                    await self.publish_pending()
                except Exception:  # one bad round must not end the dashboard's feed for the server's life
                    log.exception("dashboard update round failed; the next one follows")


def _page_minutes():
    """(first, last): the epoch minutes the page's power chart shows (reader.page_minutes), and a minute on each
    side for clocks a little apart."""
    first, last = page_minutes()
    return first - 1, last + 1


def _open(pipe):
    """Whether nng still has this peer's connection: an option of a closed pipe can't be read."""
    try:
        return pipe.protocol is not None
    except pynng.NNGException:
        return False
