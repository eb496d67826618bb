"""The small helpers every harness needs once: a free local port, an open-port probe, and polling until."""

import socket
import time

POLL_INTERVAL_S = 0.05  # short slices: a wait ends soon after its condition holds, and on Ctrl-C


class NotReady(TimeoutError, RuntimeError):
    """A wait ran out: a TimeoutError to callers that expect one, a RuntimeError to the bench command."""


def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
