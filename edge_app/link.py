"""The heartbeat loop: is the cloud there? The sender reads the answer from EdgeStatus.

The link is down after DOWN_AFTER missed beats in a row and up after one
answered beat. Each beat carries the backlog, so the cloud shows it too. An
answer counts only if it is the cloud's reply to this very beat (tagged
with the edge's secret in the cloud-to-edge direction, naming the beat's
nonce): a beat bounced back or a recorded answer is a missed beat.

The answer also names the cloud store the edge's tuples are in: an edge that
hears of another one sends again what it acked (edge_app/cloud_store.py).
"""

import logging
import threading
import time
from collections import deque

import pynng
from django.utils import timezone

from edge_app.cloud_store import StoreWatch
from edge_app.models import EdgeStatus, LinkChange, WindowAggregate
from fogsite.certdates import refusal
from fogwire import protocol as wire

log = logging.getLogger("fog.edge.link")

DOWN_AFTER = 2
BEAT_EVERY_SECONDS = 1.0  # a beat begins this long after the one before began (HeartbeatStep)
# A beat's answer may take this long: a link of up to about this round trip (a long mobile or satellite hop)
# is up, which at 800 ms it never was, and the sender gave it nothing. One beat lost then leaves the cloud a
# gap of BEAT_EVERY_SECONDS + this between beats, which must stay below its OFFLINE_AFTER_MS (3 s) or each
# lost beat would be an offline period; and below the sender's ACK_TIMEOUT_MS, so a link that answers beats
# answers batches.
BEAT_TIMEOUT_MS = 1500
# While beats go unanswered, a dial of each address this often says why when nng can: the background
# redial keeps a refused connection or a failed TLS handshake to itself, and a beat only times out.
PROBE_EVERY_SECONDS = 30
# A connection the network dropped half-open (a NAT or a proxy that forgot it, a peer that hangs) takes
# requests without an error, and nng dials again only once the kernel gives up on it, a quarter of an hour
# later or never. So the heartbeat and the sender make their socket anew (new connections, to the same
# addresses) once REDIAL_TIMEOUTS of their last REDIAL_WINDOW requests timed out: not only in a row, since
# with one of several replicas dropped, nng's turns put an answer between the timeouts. At most this often,
# twice as long after each redial that did not help (a cloud that is only slow gets no handshake storm), up to
# REDIAL_MAX_SECONDS, and back to this once the last REDIAL_WINDOW were all answered:
REDIAL_EVERY_SECONDS = 5.0
REDIAL_MAX_SECONDS = 60.0
REDIAL_WINDOW, REDIAL_TIMEOUTS = 10, 2
HANDSHAKE_CAUSES = ("the cloud's certificate is not from FOG_TLS_CA or does not name FOG_TLS_SERVER_NAME, or the "
                    "cloud wants this edge's certificate from its CA: FOG_EDGE_TLS_CERT, or a certificate expired or "
                    "not yet valid (on either side; check the clocks too)")


def handshake_failed():
    """Why a handshake failed, as far as this edge can tell: its own certificate or CA out of date, which it sees
    in its files (this edge's settings); otherwise every cause it can't tell apart (mbedTLS says only that the
    handshake failed)."""
    own = refusal("FOG_EDGE_TLS_CERT", "FOG_TLS_CA")
    return f"the TLS handshake failed: {own}" if own else f"the TLS handshake failed ({HANDSHAKE_CAUSES})"


def probe(addresses, tls=None):
    """What a blocking dial of each address (comma-separated) says, where it fails: '' if every one connects.
    It can block as long as the system's TCP connect does (an address nobody answers), so callers run it in a
    thread of its own (Heartbeat)."""
    found = []
    for address in addresses.split(","):
        sock = pynng.Req0(**({"tls_config": tls} if tls else {}))
        try:
            sock.dial(address, block=True)
        except pynng.CryptoError:
            found.append(f"{address}: {handshake_failed()}")
        except pynng.NNGException as exc:
            found.append(f"{address}: {exc}")
        finally:
            sock.close()
    return "; ".join(found)


class Timeouts:
    """Which of the last REDIAL_WINDOW requests timed out, and whether that is reason to dial again."""

    def __init__(self):
        self.recent = deque(maxlen=REDIAL_WINDOW)
        self.dialled = time.monotonic()  # when the socket was last made
        self.spacing = REDIAL_EVERY_SECONDS

    def note(self, timed_out):
        self.recent.append(bool(timed_out))
        if len(self.recent) == REDIAL_WINDOW and not any(self.recent):
            self.spacing = REDIAL_EVERY_SECONDS

    def redial_due(self):
        return sum(self.recent) >= REDIAL_TIMEOUTS and time.monotonic() - self.dialled >= self.spacing

    def dialled_again(self):
        self.recent.clear()
        self.dialled = time.monotonic()
        self.spacing = min(2 * self.spacing, REDIAL_MAX_SECONDS)


def req_socket(addresses, timeout_ms, max_reply_bytes, tls=None):
    """A Req socket that dials every cloud replica (comma-separated addresses) in the background and keeps
    redialling quickly.

    nng's Req socket spreads requests over the pipes it has and drops a dead replica's pipe, so one
    socket with one dial per replica is the whole load balancing and failover. nng drops a reply
    longer than `max_reply_bytes` unread (the request then times out and is sent again), so a peer
    can't make the edge buffer more.
    """
    sock = pynng.Req0(recv_timeout=timeout_ms, send_timeout=timeout_ms, recv_max_size=max_reply_bytes,
                      reconnect_time_min=100, reconnect_time_max=1000, **({"tls_config": tls} if tls else {}))
    try:
        for address in addresses.split(","):
            sock.dial(address, block=False)
    except BaseException:
        sock.close()
        raise
    return sock


class Heartbeat:
    every_seconds = BEAT_EVERY_SECONDS  # HeartbeatStep starts a beat this long after the last began
    def __init__(self, *, edge_id, secret, address, timeout_ms=BEAT_TIMEOUT_MS, tls=None):
        self.edge_id, self.secret, self.address, self.tls = edge_id, secret, address, tls
        EdgeStatus.for_edge(edge_id)  # before the socket: a database that fails here leaves no socket behind
        self.sock = req_socket(address, timeout_ms, wire.MAX_HEARTBEAT_BYTES, tls)
        self.probed, self.probe_thread, self.probe_found = None, None, ""  # see _why_no_answer
        self.probe_round = 0  # a probe still running when the link came back must not write into the next outage
        self.missed = 0
        # The kind of failure last logged while the link is down: a new edge, or one that starts with the
        # link down, says why too (a wrong secret, a certificate, nobody there), once a kind, not a beat.
        self.down_said = None
        self.store_watch = StoreWatch()
        self.timeouts = Timeouts()

    def handle_one_beat(self):
        """Send one heartbeat, record the outcome. True if the cloud answered."""
        backlog = WindowAggregate.objects.backlog().count()
        status = EdgeStatus.for_edge(self.edge_id)
        error = kind = ""
        try:
            probes = self.store_watch.probes(status.cloud_store_since)
            beat = wire.heartbeat(self.edge_id, self.secret, backlog=backlog, paused=status.paused, probes=probes)
            self.sock.send(beat)
            reply = wire.open_reply(self.sock.recv(), beat, self.secret, wire.KIND_HEARTBEAT)
            store, held = wire.read_store(reply), wire.read_held(reply, probes)
        except pynng.Timeout:
            error, kind = f"no answer from {self.address} within {self.sock.recv_timeout} ms", "timeout"
        except pynng.NNGException as exc:
            error, kind = f"{self.address}: {exc}", type(exc).__name__
        except wire.ProtocolError as exc:
            if exc.trusted:
                error, kind = str(exc), exc.reason
            else:  # anyone on the path may have written its words: said as such, and one kind however they vary
                error, kind = f"a reply not provably the cloud's: {exc}", "untrusted"
        self.missed = self.missed + 1 if error else 0
        self.timeouts.note(kind == "timeout")
        if self.timeouts.redial_due():
            self._redial()
        if kind == "timeout" and self.missed >= DOWN_AFTER:
            found = self._why_no_answer()
            if found:
                error, kind = f"{error}: {found}", f"timeout: {found}"
        elif not error:
            self.probed, self.probe_found, self.probe_round = None, "", self.probe_round + 1
        now = timezone.now()
        changes = {"backlog": backlog}
        if not error:
            self.down_said = None
            changes.update(last_heartbeat_at=now, last_error="")
            self.store_watch.hear(status.cloud_store, store, changes, probes, held, since=status.cloud_store_since)
            if not status.connected:
                changes.update(connected=True, since=now)
                LinkChange.record(self.edge_id, True, now)
                log.info("link to the cloud is up (%s)", self.address)
        elif self.missed >= DOWN_AFTER and status.connected:
            changes.update(connected=False, since=now, last_error=error[:300])
            LinkChange.record(self.edge_id, False, now, error)
            log.warning("link to the cloud is down: %s", error)
            self.down_said = kind
        else:
            changes["last_error"] = error[:300]
            if self.missed >= DOWN_AFTER and kind != self.down_said:
                log.warning("the cloud does not answer this edge's heartbeats: %s; tuples wait here", error)
                self.down_said = kind
        EdgeStatus.objects.filter(pk=status.pk).update(**changes)
        return not error

    def _redial(self):
        """A new socket, so new connections (see REDIAL_EVERY_SECONDS)."""
        old = self.sock
        self.sock = req_socket(self.address, old.recv_timeout, wire.MAX_HEARTBEAT_BYTES, self.tls)
        old.close()
        self.timeouts.dialled_again()
        log.info("beats went unanswered: dialled %s again on new connections", self.address)

    def _why_no_answer(self):
        """What the last probe of the addresses found; starts the next one when due (one at a time)."""
        if self.probe_thread is not None and not self.probe_thread.is_alive():
            self.probe_thread = None
        now = time.monotonic()
        if self.probe_thread is None and (self.probed is None or now - self.probed >= PROBE_EVERY_SECONDS):
            self.probed = now

            def run(round_=self.probe_round):
                found = probe(self.address, self.tls)
                if round_ == self.probe_round:
                    self.probe_found = found

            self.probe_thread = threading.Thread(target=run, name="fog-link-probe", daemon=True)
            self.probe_thread.start()
            self.probe_thread.join(self.sock.recv_timeout / 1000)  # a handshake refused here takes milliseconds
        return self.probe_found

    def close(self):
        self.sock.close()
