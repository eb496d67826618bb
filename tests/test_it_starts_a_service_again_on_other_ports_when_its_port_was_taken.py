"""A harness's port is only found free: another process may bind it before the server does (a broker's JVM takes
seconds to get there). The server then exits while starting, and its error says why, quoting its log, as the
harness removes the folder with the log on its way out (CI150 lost a fault lane to "kafka exited with code 1
while starting; see" a log that was gone). A fault lane's services start again on other ports, and a lane
runner closed meanwhile leaves none of them running."""

import socket
import threading
from contextlib import closing
from pathlib import Path

import pytest
from django.conf import settings

from tooling.chaos.pipeline import ChaosServices, PipelineClosed
from tooling.localservices import Kafka, Paths, PortTaken, Redis
from tooling.net import free_port

LIBS = Path(settings.VAR_DIR) / "kafka" / "libs"


def taken(port):
    """Bound, not listening, and without SO_REUSEADDR: the look before a start (a connect) finds the port free,
    and the server's own bind fails, as when another process binds it between the two."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    return closing(sock)


@pytest.mark.parametrize("service", [Redis, Kafka], ids=["redis", "kafka"])
def test_it_says_a_server_could_not_bind_its_port_and_quotes_its_log(service, tmp_path):
    server = service(Paths(Path(settings.BASE_DIR), tmp_path, libs=LIBS), "127.0.0.1", free_port())
    with taken(server.port):
        try:
            with pytest.raises(PortTaken) as raised:
                server.up(lambda line: None)
        finally:
            server.down(lambda line: None)
    message = str(raised.value)
    assert f"{server.name} on 127.0.0.1:{server.port}" in message
    quoted = [line for line in message.splitlines()[1:] if line.startswith("  | ")]
    assert quoted and any("Address already in use" in line for line in quoted), message


def test_it_starts_a_lanes_services_on_other_ports_when_one_was_taken():
    services = ChaosServices(LIBS)
    first_folder, first_kafka = services.folder, services.kafka.port
    said = []
    try:
        with taken(first_kafka):
            services.up(said.append)
        assert services.kafka.port != first_kafka and services.kafka.ready() and services.redis.ready()
        assert not first_folder.exists(), "the first try's folder stays behind"
        assert any("could not bind its port" in line and "other ports" in line for line in said), said
    finally:
        services.down()
    assert not services.kafka.ready() and not services.redis.ready()
    assert not services.folder.exists()


@pytest.mark.parametrize("after_s", [0.0, 1.5], ids=["before-the-broker-runs", "while-it-starts"])
def test_it_leaves_nothing_running_when_taken_down_while_starting(after_s):
    services = ChaosServices(LIBS)
    raised = []

    def start():
        try:
            services.up()
        except BaseException as exc:  # noqa: BLE001 -- the test looks at it
            raised.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    threading.Event().wait(after_s)
    services.down()  # as LaneRunner.close does from its own thread
    starter.join(120)
    assert not starter.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], PipelineClosed), raised
    assert not services.kafka.ready() and services.kafka.our_pid() is None
    assert not services.redis.ready() and not services.folder.exists()
