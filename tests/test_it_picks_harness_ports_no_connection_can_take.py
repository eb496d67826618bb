"""The harness's ports lie below the kernel's ephemeral range, where no outgoing connection is ever given one,
so a lane's proxy or a restarted cloud can bind the port it was handed even while other lanes are busy."""

import itertools
import socket
from collections import deque

import pytest

from tooling import net


def test_it_picks_ports_below_the_ephemeral_range_that_a_server_can_listen_on():
    floor = net.ephemeral_floor()
    assert floor - net.PICK_FLOOR >= net.PICK_ROOM, f"this host's ephemeral range starts at {floor}: no room below it"
    for _ in range(50):
        port = net.free_port()
        assert net.PICK_FLOOR <= port < floor
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
            server.listen()


def test_it_passes_over_a_port_something_listens_on(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", net.free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        worker, workers = net._worker()  # a parallel test worker picks only ports of its own residue
        # Passed over for the listener alone, not as a port this process gave lately (earlier tests' picks);
        # the other port is one a bind takes now (not one in TIME_WAIT, which port_open calls closed).
        monkeypatch.setattr(net, "_GIVEN", deque(maxlen=net._GIVEN.maxlen))
        other = next(p for p in itertools.count(taken + 1) if p % workers == worker and net.bindable(p))
        picks = iter([taken, taken, other])
        monkeypatch.setattr(net._PICKS, "randrange", lambda low, high: next(picks))
        assert net.free_port() == other


def test_it_picks_only_ports_of_its_sessions_share_and_its_workers_part_of_it(monkeypatch):
    """Test sessions side by side (`make test`: the serial one, and three workers behind it): each picker keeps to
    its session's share, and no two of them pick from the same ports."""
    pickers = [("0/2", "", "")] + [("1/2", f"gw{n}", "3") for n in range(3)]
    residues = {}
    for share, worker, workers in pickers:
        monkeypatch.setenv(net.PORT_SHARE_ENV, share)
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", workers)
        ports = [net.free_port() for _ in range(20)]
        assert all(port % 2 == int(share[0]) for port in ports), (share, worker, ports)
        residues[share, worker] = {port % 6 for port in ports}
    assert all(not residues[a] & residues[b] for a in residues for b in residues if a != b), residues


@pytest.mark.parametrize("share", ["2/2", "1", "a/2", "-1/2"])
def test_it_names_a_malformed_port_share(monkeypatch, share):
    monkeypatch.setenv(net.PORT_SHARE_ENV, share)
    with pytest.raises(ValueError, match=f"FOG_TEST_PORT_SHARE={share!r}"):
        net.free_port()


def test_it_starts_a_proxy_on_another_port_when_its_reserved_one_was_taken_meanwhile(monkeypatch):
    """Another test may bind a port between its reservation and the proxy's start (another process: the
    reservation can't know), as one did in a CI run."""
    from tooling.chaos import pipeline

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", net.free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        handed = [taken]
        reserve = pipeline.reserve_port
        monkeypatch.setattr(pipeline, "reserve_port", lambda: handed.pop() if handed else reserve())
        proxy = pipeline._proxy(net.free_port())
        try:
            assert proxy.listen_port != taken and proxy.server is not None and proxy.server.is_serving()
        finally:
            proxy.stop()
