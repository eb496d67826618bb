"""Finding 3: nobody can make the cloud or the edge hold large messages before being authenticated.

nng checks a message's announced length against the port's limit before it
buffers a byte of it, and the cloud takes a bounded number of peers per
port. Raw TCP clients speak nng's SP framing by hand here, as an attacker would.
"""

import socket
import struct
import threading
import time

import pynng
import pytest

from edge_app.models import Status, WindowAggregate
from fogwire import protocol as wire
from tests.conftest import (EDGE_ID, EDGE_SECRET, CloudThread, FakeCloud, add_pending, deliver, edge_sender, make_rows,
                            wait_for)

REQ0_HANDSHAKE = b"\x00SP\x00\x00\x30\x00\x00"  # an SP peer speaking Req0 (protocol 48)
# A cloud that refused no frame for this long, with a peer flooding it, has stopped answering (well past
# REPLY_SEND_SECONDS, when a reply nobody takes closes its peer and the worker goes on).
STALLED_SECONDS = 15


def _peer(address):
    host, port = address.rsplit("/", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(REQ0_HANDSHAKE)
    assert len(sock.recv(8)) == 8  # the cloud's half of the handshake
    return sock


def _closed_by_the_cloud(sock, seconds=5.0):
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@pytest.fixture
def small_cloud(redis_url, cloud_prefix):
    server = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, max_connections=4).start()
    yield server
    server.stop()


@pytest.mark.parametrize("port, announced", [("data", 30 * 1024 * 1024), ("heartbeat", 1024 * 1024)])
def test_it_drops_a_peer_that_announces_a_message_over_the_limit(small_cloud, port, announced):
    peers = []
    try:
        for _ in range(3):
            peer = _peer(small_cloud.data_addr if port == "data" else small_cloud.hb_addr)
            peer.sendall(struct.pack(">Q", announced) + b"\x80\x00\x00\x01" + bytes(64 * 1024))
            peers.append(peer)
        assert all(_closed_by_the_cloud(peer) for peer in peers)  # dropped at the header, nothing buffered
    finally:
        for peer in peers:
            peer.close()
    assert deliver(small_cloud, make_rows(1))[1] == [""]


def test_it_takes_a_bounded_number_of_peers_per_port(small_cloud):
    peers = [_peer(small_cloud.data_addr)]
    try:
        # A partial message within the limit is held: that costs at most the limit per peer.
        peers[0].sendall(struct.pack(">Q", wire.MAX_DATA_BYTES) + b"\x80\x00\x00\x01" + bytes(1024))
        peers += [_peer(small_cloud.data_addr) for _ in range(5)]
        assert wait_for(lambda: small_cloud.server.counts["connections_refused"] >= 2, timeout=10)
        assert sum(_closed_by_the_cloud(peer, 1.0) for peer in peers) == 2  # 4 kept, the rest turned away
    finally:
        for peer in peers:
            peer.close()
    # Their slots are free again once they go.
    assert wait_for(lambda: _deliverable(small_cloud), timeout=15, interval=0.3)


def test_it_closes_a_peer_that_never_reads_its_replies_and_serves_edges_meanwhile(small_cloud):
    """Each junk frame is answered; a peer that reads none of the answers fills its buffers (tens of thousands
    of answers, which loopback's send buffer grows to take), and a reply that can't go out must not hold a
    worker for good: one such connection, no secret needed, once stopped the port."""
    host, port = small_cloud.data_addr.rsplit("/", 1)[1].split(":")
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    peer.connect((host, int(port)))
    peer.sendall(REQ0_HANDSHAKE)
    junk = wire.MAGIC + bytes((wire.KIND_BATCH,)) + bytes(56)
    frames = (struct.pack(">QI", 4 + len(junk), 0x80000001) + junk) * 200
    ended, done = [], threading.Event()

    def flood():
        # send(), not sendall(): a sendall that times out part way says nothing of how much went, and sending the
        # frames again from their start cut one in two. nng then read a length from the middle of a frame and
        # dropped what followed unanswered (no header), which looked like a cloud that stopped answering.
        peer.settimeout(1.0)
        stream, sent = memoryview(frames), 0
        while not done.is_set():
            try:
                sent = (sent + peer.send(stream[sent:])) % len(frames)
            except TimeoutError:
                continue  # the cloud reads no more of it until its replies go out
            except OSError:
                ended.append("closed by the cloud")
                return

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    try:
        # How long filling the buffers takes is the machine's speed (about ten seconds when idle, minutes on a busy
        # one): wait while the cloud still answers; the bug this guards against is a cloud that stops doing so.
        assert _while_answering(small_cloud, lambda: small_cloud.server.counts["replies_unread"] >= 1)
        assert _deliverable(small_cloud)  # a worker is free for an edge
        flooding.join(10)
        assert ended == ["closed by the cloud"]
    finally:
        done.set()
        peer.close()
        flooding.join(5)


def _while_answering(cloud, predicate, stalled=STALLED_SECONDS):
    """Wait for `predicate` as long as the cloud keeps refusing frames; False once it refused none for `stalled` s
    (more than REPLY_SEND_SECONDS, after which a reply nobody takes closes its peer)."""
    seen, since = -1, time.monotonic()
    while not predicate():
        counts = cloud.server.counts.copy()  # at once: the cloud's thread adds reasons while we look
        refused = sum(count for reason, count in counts.items() if reason.startswith("refused:"))
        if refused != seen:
            seen, since = refused, time.monotonic()
        elif time.monotonic() - since > stalled:
            return False
        time.sleep(0.2)
    return True


def test_it_frees_the_slots_of_peers_that_connect_and_leave_at_once(redis_url, cloud_prefix):
    """pynng's list of a socket's peers keeps some that closed as fast as they connected; the cloud's count of
    peers must not, or a burst of quick connections locks every edge out until a restart. One slot: a single
    such peer would take it."""
    one_slot = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, max_connections=1).start()
    try:
        _connect_and_leave(one_slot.data_addr)
        assert wait_for(lambda: _deliverable(one_slot), timeout=15, interval=0.3)
    finally:
        one_slot.stop()


def _connect_and_leave(address, seconds=4.0):
    host, port = address.rsplit("/", 1)[1].split(":")

    def burst():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with socket.socket() as quick:
                try:
                    quick.connect((host, int(port)))
                    quick.sendall(REQ0_HANDSHAKE)
                except OSError:
                    pass

    bursts = [threading.Thread(target=burst) for _ in range(3)]
    for thread in bursts:
        thread.start()
    for thread in bursts:
        thread.join()


def _deliverable(cloud):
    try:
        return deliver(cloud, make_rows(1, household="later"))[1] == [""]
    except pynng.NNGException:
        return False


@pytest.mark.django_db(transaction=True)
def test_the_edge_reads_no_reply_over_its_limit():
    """A fake cloud answers with a reply far over wire.MAX_REPLY_BYTES: the edge never takes it in."""
    add_pending(1)
    with FakeCloud(lambda request: wire.MAGIC + bytes((wire.KIND_REPLY,)) + bytes(8 * 1024 * 1024)) as fake:
        sender = edge_sender(fake.address, batch=10, in_flight=1, ack_timeout_ms=1500)
        try:
            assert wait_for(lambda: sender.handle_one_round() == 0 and fake.served, timeout=15)
        finally:
            sender.close()
    assert sender.totals["timeouts"] >= 1 and sender.totals["acked"] == 0
    assert WindowAggregate.objects.get().status == Status.PENDING  # sent again later, never taken as an answer
