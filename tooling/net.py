"""The small helpers every harness needs once: a free local port, an open-port probe, and polling until."""

import os
import random
import socket
import time
from collections import deque
from pathlib import Path

POLL_INTERVAL_S = 0.05  # short slices: a wait ends soon after its condition holds, and on Ctrl-C
# Harness ports come from below the kernel's ephemeral range. A port the kernel handed out (bind to 0) lies
# inside it, and between our check and the server's bind any outgoing connection on the host may be given the
# same port: a lane's proxy once failed to bind that way while another lane's clients were busy. The same
# holds for a port a server gives up for a while (a cut link, a killed cloud) and binds again.
PICK_FLOOR = 20000  # above the fixed ports of the project's own services (the cluster's buses are at 17000+)
PICK_ROOM = 1000  # fewer free ports than this below the ephemeral range: take the kernel's pick after all
PICK_TRIES = 200
_PICKS = random.SystemRandom()  # never seeded: two processes whose `random` a test seeded alike pick apart
# A port is only checked free, not held, until its server binds it: a process does not hand out one it gave
# lately again, and each worker of a parallel test run (pytest-xdist, which names them in the environment its
# children inherit) picks only ports of its own residue (port % workers), so two never pick the same one
# meanwhile, and each can still pick anywhere in the range (a cluster needs its ports low, for its buses).
_GIVEN = deque(maxlen=512)
# Test sessions that run side by side (`make test`) split the ports the same way: "k/n" gives a session the
# ports p with p % n == k, which its W workers share out among themselves (worker w: p % (n * W) == k + n * w).
# Ports derived from a pick (a broker's controller at port + 1, a local cluster's) are not kept to the share.
PORT_SHARE_ENV = "FOG_TEST_PORT_SHARE"
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
TCP_LISTEN = "0A"  # a listening socket's state in /proc/net/tcp


class NotReady(TimeoutError, RuntimeError):
    """A wait ran out: a TimeoutError to callers that expect one, a RuntimeError to the bench command."""


def free_port():
    """A TCP port on loopback that nothing uses right now, and that no outgoing connection will be given."""
    ceiling = ephemeral_floor()
    tries = PICK_TRIES if ceiling - PICK_FLOOR >= PICK_ROOM else 0
    worker, workers = _worker()
    for _ in range(tries):
        port = _PICKS.randrange(PICK_FLOOR, ceiling)
        if port % workers != worker or port in _GIVEN or not bindable(port):
            continue
        _GIVEN.append(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bindable(port):
    """True if a server could bind `port` on loopback now (port_open calls a port in TIME_WAIT closed too)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _worker():
    """(this picker's residue, the modulus): its parallel test worker's number among how many there are, or (0, 1)
    outside a parallel test run; within its session's share (PORT_SHARE_ENV) when test sessions run side by side."""
    share, shares = _share()
    worker, workers = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and workers.isdigit() and int(workers) > 1):
        return share, shares
    return share + shares * (int(worker[2:]) % int(workers)), shares * int(workers)  # still p % shares == share


def _share():
    """(k, n) from PORT_SHARE_ENV ("k/n"), (0, 1) if unset; a malformed value is an error that names it."""
    value = os.environ.get(PORT_SHARE_ENV, "")
    if not value:
        return 0, 1
    share, _, shares = value.partition("/")
    if not (share.isdigit() and shares.isdigit() and int(share) < int(shares)):
        raise ValueError(f"{PORT_SHARE_ENV}={value!r}: expected k/n with 0 <= k < n, e.g. 1/2")
    return int(share), int(shares)


def ephemeral_floor():
    """The lowest port the kernel gives outgoing connections (and a bind to port 0)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def listeners(port):
    """{socket inode: local address as the kernel writes it (hex, "0100007F" for 127.0.0.1)} of the TCP sockets
    listening on `port`, from /proc/net/tcp and tcp6; a process's fd links to its socket as `socket:[inode]`."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:  # no IPv6 on this host
            continue
        for fields in (row.split() for row in rows):
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == TCP_LISTEN and int(hex_port, 16) == port:
                found[fields[9]] = address
    return found


def port_open(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout=10.0, what=None, *, interval=POLL_INTERVAL_S):
    """Call `predicate` until it returns something true and return that. When `timeout` seconds pass first:
    raise NotReady naming `what` if given, else return the last (false) value for the caller to assert."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    value = predicate()
    if not value and what is not None:
        raise NotReady(f"timed out after {timeout} s waiting for {what}")
    return value
