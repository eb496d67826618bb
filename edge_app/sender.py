"""The sender loop: PENDING tuples -> batches to the cloud -> ACKED with postal codes.

One round takes up to `in_flight` batches, marks them SENT, sends them on
as many Req contexts at once, then applies every reply: ACKED with the
postal code; REFUSED with the cloud's reason when the reason is permanent
(a value outside the limits, a household another edge owns, the quota),
never to be sent again unless someone sends it again from the admin after a
fix; or back to PENDING with a backoff when the reason is transient. A
reply that does not come within the ack timeout puts its tuples back to
PENDING; so does a restart (SENT tuples are sent again, and the cloud's
dedup makes that safe).

Only the cloud's reply to the very request sent on a context is applied
(wire.read_reply checks the tag and the request's nonce). Anything else --
a replayed or forged reply, an error frame the cloud did not tag -- may
come from anyone on the path: its tuples go back to PENDING and sending
pauses briefly (UNTRUSTED_PAUSE_SECONDS), never for a long backoff.
"""

import logging
import time
from collections import deque
from datetime import timedelta

import pynng
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from edge_app.link import Timeouts, req_socket
from edge_app.models import IN_CHUNK as CHUNK
from edge_app.models import chunks as _chunks
from edge_app.models import UNANSWERED, EdgeStatus, Status, WindowAggregate
from fogwire import protocol as wire

log = logging.getLogger("fog.edge.sender")

ACK_TIMEOUT_MS = 3000
MAX_BACKOFF_SECONDS = 600
TRANSIENT_PAUSE_SECONDS = 0.5
UNTRUSTED_PAUSE_SECONDS = 2.0  # an untagged error or a reply that isn't ours: short, whoever sent it
LINK_CHECK_SECONDS = 0.25
TABLE = WindowAggregate._meta.db_table
# The first acknowledgement's time stays: retention counts from it, so tuples sent again (from the admin, or to
# a store that lost them) are not kept another retention period each time.
MARK_ACKED = (f"UPDATE {TABLE} SET status = {int(Status.ACKED)}, postal_code = %s, acked_at = COALESCE(acked_at, %s), "
              "refusal = '', next_attempt_at = NULL WHERE id = %s")  # and a condition on acked_at: see mark_acked


NO_POSTAL_CODE = "no-postal-code"
COLUMNS = ("id", "household", "window_start", "window_end", "average_w", "readings")  # a batch's rows
# One statement claims the next batch: marks it SENT and returns it, where the ORM needs a SELECT and then an
# UPDATE of the same rows (`bench drain` measures the two). RETURNING (SQLite >= 3.35, PostgreSQL) gives the
# rows in no set order: the sender sorts them by id, the order they were stored in. The tuples to resend
# (Status.RESEND) are claimed only where the PENDING ones leave room in a batch.
CLAIM = {status: f"UPDATE {TABLE} SET status = {int(Status.SENT)}, sent_at = %s, attempts = attempts + 1 WHERE "
                 f"id IN (SELECT id FROM {TABLE} WHERE status = {int(status)} AND (next_attempt_at IS NULL OR "
                 f"next_attempt_at <= %s) ORDER BY id LIMIT %s) RETURNING {', '.join(COLUMNS)}"
         for status in (Status.PENDING, Status.RESEND)}


def _permanent(reason):
    """A reason the same tuple would meet again. A reply without a code and without a reason is the
    cloud's fault, not the tuple's, so it is retried like the transient ones; so are wire.RETRIED."""
    return reason not in wire.TRANSIENT | wire.RETRIED and reason != NO_POSTAL_CODE


def _update_returns_rows():
    """UPDATE ... RETURNING: PostgreSQL, and SQLite from 3.35 on (the same version gives INSERT's RETURNING)."""
    return connection.vendor == "postgresql" or (connection.vendor == "sqlite"
                                                 and connection.features.can_return_columns_from_insert)


class Sender:
    def __init__(self, *, edge_id, secret, address, batch=1000, in_flight=4, ack_timeout_ms=ACK_TIMEOUT_MS,
                 tls=None):
        if not 0 < batch <= wire.MAX_BATCH_TUPLES:
            raise ValueError(f"batch must be 1..{wire.MAX_BATCH_TUPLES} tuples, not {batch}")
        self.edge_id, self.secret, self.address, self.tls = edge_id, secret, address, tls
        self.batch, self.ack_timeout_ms = batch, ack_timeout_ms
        EdgeStatus.for_edge(edge_id)  # before the socket: a database that fails here leaves no socket behind
        self.in_flight = deque()  # (context, batch, request frame) in the order sent
        self._dial(in_flight)
        self.timeouts = Timeouts()  # replies that did not come: a link dropped half-open (edge_app/link.py)
        self._link, self._link_checked = False, 0.0
        self.pause_until = 0.0
        self.totals = {"sent": 0, "acked": 0, "refused": 0, "timeouts": 0, "untrusted": 0}

    def _dial(self, contexts):
        self.sock = req_socket(self.address, self.ack_timeout_ms, wire.MAX_REPLY_BYTES, self.tls)
        self.contexts = [self.sock.new_context() for _ in range(contexts)]
        for ctx in self.contexts:
            ctx.recv_timeout = ctx.send_timeout = self.ack_timeout_ms
        self.idle = list(self.contexts)

    def _redial(self):
        """What is in flight back to PENDING, and a new socket (edge_app/link.py's REDIAL_EVERY_SECONDS)."""
        log.info("replies did not come: dialling %s again on new connections", self.address)
        self._close_socket()
        self._dial(len(self.contexts))
        self.timeouts.dialled_again()

    def requeue_sent(self):
        """Tuples left SENT by an earlier run never got their reply: send them again."""
        return WindowAggregate.objects.filter(status=Status.SENT).update(status=UNANSWERED)

    def link_up(self):
        now = time.monotonic()
        if now - self._link_checked >= LINK_CHECK_SECONDS:
            self._link = EdgeStatus.objects.filter(edge_id=self.edge_id).values_list("connected", flat=True).first()
            self._link_checked = now
        return bool(self._link)

    def handle_one_round(self):
        """Keep every context busy with a batch, then apply the oldest reply. Returns the number acknowledged.

        Requests stay outstanding while the edge commits a reply, so the
        cloud works on the next batches in the meantime.
        """
        if self.timeouts.redial_due():
            self._redial()
        if not self.link_up() or time.monotonic() < self.pause_until:
            return self._drain_in_flight()
        while self.idle:
            batch = self._next_batch()
            if not batch:
                break
            ctx = self.idle.pop()
            request = wire.batch_frame(self.edge_id, self.secret, batch)
            try:
                ctx.send(request)
            except pynng.NNGException as exc:
                self.idle.append(ctx)
                self._back_to_pending(batch, f"send failed: {exc}", backoff=False)
                break
            self.in_flight.append((ctx, batch, request))
        if not self.in_flight:
            return 0
        ctx, batch, request = self.in_flight.popleft()
        try:
            return self._receive(ctx, batch, request)
        finally:
            self.idle.append(ctx)

    def _drain_in_flight(self):
        acked = 0
        while self.in_flight:
            ctx, batch, request = self.in_flight.popleft()
            acked += self._receive(ctx, batch, request)
            self.idle.append(ctx)
        return acked

    def _next_batch(self):
        """The next `batch` sendable tuples in id order, marked SENT: (id, household, start, end, average, readings).
        PENDING ones first, then those to resend."""
        if not _update_returns_rows():
            return self.claim_with_orm()
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with transaction.atomic(), connection.cursor() as cursor:
            rows = []
            for claim in CLAIM.values():
                cursor.execute(claim, [now, now, self.batch - len(rows)])
                rows += cursor.fetchall()
                if len(rows) == self.batch:
                    break
            return sorted(rows)

    def claim_with_orm(self):
        """What _next_batch does, in the ORM's two steps."""
        batch = list(WindowAggregate.objects.sendable().values_list(*COLUMNS)[: self.batch])
        if len(batch) < self.batch:
            batch = sorted(batch + list(WindowAggregate.objects.sendable(status=Status.RESEND).values_list(
                *COLUMNS)[: self.batch - len(batch)]))
        if batch:
            now = timezone.now()
            with transaction.atomic():
                for ids in _chunks([r[0] for r in batch], CHUNK):
                    WindowAggregate.objects.filter(id__in=ids).update(status=Status.SENT, sent_at=now,
                                                                       attempts=F("attempts") + 1)
        return batch

    def _receive(self, ctx, batch, request):
        try:
            codes, reasons = wire.read_reply(ctx.recv(), request, self.secret, len(batch))
        except pynng.Timeout:
            self.totals["timeouts"] += 1
            self.timeouts.note(True)
            self._link_checked = 0.0
            self._back_to_pending(batch, "", backoff=False)
            log.warning("no reply for a batch of %d within the ack timeout; will send again", len(batch))
            return 0
        except pynng.NNGException as exc:
            self._back_to_pending(batch, "", backoff=False)
            log.warning("batch of %d not delivered: %s", len(batch), exc)
            return 0
        except wire.ProtocolError as exc:
            if not exc.trusted:
                # Not provably the cloud's answer to this request: never act on what it says.
                self.totals["untrusted"] += 1
                self._back_to_pending(batch, "", backoff=False)
                self.pause_until = time.monotonic() + UNTRUSTED_PAUSE_SECONDS
                log.warning("reply to a batch of %d not trusted (%s); sending again shortly", len(batch), exc)
            elif exc.reason in wire.TRANSIENT:
                # Nothing wrong with the data: send it again as soon as the cloud recovers.
                self._back_to_pending(batch, "", backoff=False)
                self.pause_until = time.monotonic() + TRANSIENT_PAUSE_SECONDS
                log.warning("cloud could not take a batch of %d (%s); retrying shortly", len(batch), exc.reason)
            else:
                self._back_to_pending(batch, exc.reason, backoff=True)
                log.error("cloud refused a batch of %d: %s", len(batch), exc)
            return 0
        self.timeouts.note(False)
        return self._apply(batch, codes, reasons)

    def mark_acked(self, acked):
        """(postal code, stamp, id) rows to ACKED with one prepared UPDATE run over them all: each row has
        its own code, which the ORM would send as an UPDATE a row (`bench drain` measures the two).

        Returns how many were acknowledged for the first time. A tuple sent again (the admin's action, a cloud
        store that lost it) keeps its acked_at; it is acknowledged again by a second statement, run only when
        there are such tuples, and not counted again: EdgeStatus.acked counts tuples, and never goes down (a
        Prometheus counter)."""
        with connection.cursor() as cursor:
            cursor.executemany(MARK_ACKED + " AND acked_at IS NULL", acked)
            first = cursor.rowcount
            if first < len(acked):
                cursor.executemany(MARK_ACKED + " AND acked_at IS NOT NULL", acked)
        return first

    def _apply(self, batch, codes, reasons):
        now = timezone.now()
        stamp = connection.ops.adapt_datetimefield_value(now)
        acked = [(code, stamp, row[0]) for row, code, why in zip(batch, codes, reasons) if not why and code]
        refused = [(row, why or NO_POSTAL_CODE) for row, code, why in zip(batch, codes, reasons) if why or not code]
        permanent = sum(1 for _, why in refused if _permanent(why))
        with transaction.atomic():
            first = self.mark_acked(acked)
            by_reason = {}
            for row, why in refused:
                by_reason.setdefault(why, []).append(row[0])
            for why, ids in by_reason.items():
                if _permanent(why):
                    for chunk in _chunks(ids, CHUNK):
                        WindowAggregate.objects.filter(id__in=chunk, status=Status.SENT).update(
                            status=Status.REFUSED, refusal=why[:64], next_attempt_at=None)
                else:
                    self._refuse(ids, why, now)
            EdgeStatus.objects.filter(edge_id=self.edge_id).update(
                sent=F("sent") + len(batch), acked=F("acked") + first, refused=F("refused") + len(refused))
        if refused:
            log.warning("cloud refused %d of %d tuples (%s)%s", len(refused), len(batch),
                        ", ".join(sorted({why for _, why in refused})),
                        f"; {permanent} for good (status refused)" if permanent else "")
        self.totals["sent"] += len(batch)
        self.totals["acked"] += len(acked)
        self.totals["refused"] += len(refused)
        return len(acked)

    def _refuse(self, ids, why, now):
        """Back to PENDING (or RESEND: UNANSWERED) with the reason, not tried again before an exponential backoff."""
        for chunk in _chunks(ids, CHUNK):  # still SENT: ours to put back, whatever else changed it meanwhile
            tuples = WindowAggregate.objects.filter(id__in=chunk, status=Status.SENT)
            attempts = tuples.aggregate(most=Max("attempts"))["most"] or 1
            delay = min(2 ** min(attempts, 20), MAX_BACKOFF_SECONDS)
            tuples.update(status=UNANSWERED, refusal=why[:64], next_attempt_at=now + timedelta(seconds=delay))

    def _back_to_pending(self, batch, why, backoff):
        """A batch without an answer back to PENDING, or RESEND (UNANSWERED); after a backoff if `backoff`."""
        now = timezone.now()
        with transaction.atomic():
            if backoff:
                self._refuse([r[0] for r in batch], why, now)
            else:
                for ids in _chunks([r[0] for r in batch], CHUNK):
                    WindowAggregate.objects.filter(id__in=ids, status=Status.SENT).update(status=UNANSWERED)

    def close(self):
        """Put what is still in flight back (UNANSWERED: it will be sent again), then close the socket. If the
        database fails here, the socket closes all the same (its contexts first: pynng's finalizer would complain
        of a context outliving it), and the next sender's requeue_sent puts those tuples back."""
        self._close_socket()

    def _close_socket(self):
        try:
            for _, batch, _ in self.in_flight:
                self._back_to_pending(batch, "", backoff=False)
            self.in_flight.clear()
        finally:
            for ctx in self.contexts:
                ctx.close()
            self.sock.close()
