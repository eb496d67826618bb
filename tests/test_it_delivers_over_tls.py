"""Finding 11: the link can be encrypted. The delivery path runs plain, over TLS and over mutual TLS.

Real pynng sockets (tls+tcp through nng's mbedTLS), a real cloud, and
certificates from `manage.py makecerts`; an edge that can't prove what it
must (the cloud's certificate, or its own under mutual TLS) delivers nothing.
"""

import pytest
from django.core.management import CommandError, call_command

from cloud_app.keys import Keys
from edge_app.link import Heartbeat
from edge_app.loops import cloud_tls_problem
from edge_app.models import EdgeStatus
from fogwire import tls as wire_tls
from tests.conftest import (EDGE_ID, EDGE_SECRET, CloudThread, add_pending, edge_sender, run_manage, send_until_all_acked,
                            wait_for)

TUPLES = 600
PROBE_WAIT_SECONDS = 20  # a handshake takes milliseconds; seconds on a machine busy with other tests


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    result = run_manage("makecerts", "--dir", str(folder), "--cloud-name", "127.0.0.1", "--edge", EDGE_ID)
    assert result.returncode == 0, result.stderr
    other = tmp_path_factory.mktemp("other-ca")
    assert run_manage("makecerts", "--dir", str(other), "--cloud-name", "127.0.0.1").returncode == 0
    assert (folder / "ca-key.pem").stat().st_mode & 0o077 == 0  # private keys: owner only
    return folder, other


def _deliver(cloud, client_tls):
    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.hb_addr, timeout_ms=1000, tls=client_tls)
    sender = edge_sender(cloud.data_addr, batch=200, in_flight=2, ack_timeout_ms=2000, tls=client_tls)
    try:
        return wait_for(beat.handle_one_beat, timeout=10, interval=0.2) and send_until_all_acked(sender)
    finally:
        sender.close()
        beat.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["plain", "tls", "mutual tls"])
def test_it_delivers_every_tuple(mode, certs, redis_url, cloud_prefix, redis_client):
    folder, _ = certs
    server_tls = client_tls = None
    if mode != "plain":
        mutual = mode == "mutual tls"
        server_tls = wire_tls.server_config(folder / "cloud.pem", folder / "ca.pem", mutual=mutual)
        client_tls = wire_tls.client_config(folder / "ca.pem", "127.0.0.1",
                                            folder / f"edge-{EDGE_ID}.pem" if mutual else None)
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, tls=server_tls).start()
    add_pending(TUPLES)
    try:
        assert _deliver(cloud, client_tls)
    finally:
        cloud.stop()
    assert cloud.data_addr.startswith("tls+tcp://" if server_tls else "tcp://")
    assert redis_client.hlen(Keys(cloud_prefix).tuples(EDGE_ID)) == TUPLES
    assert EdgeStatus.objects.get(edge_id=EDGE_ID).acked == TUPLES


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("client", ["plain tcp", "another CA", "no client certificate"])
def test_it_delivers_nothing_to_or_from_a_peer_it_cannot_verify(client, certs, redis_url, cloud_prefix, redis_client):
    folder, other = certs
    server_tls = wire_tls.server_config(folder / "cloud.pem", folder / "ca.pem", mutual=True)
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, tls=server_tls).start()
    client_tls = {"plain tcp": None,
                  "another CA": wire_tls.client_config(other / "ca.pem", "127.0.0.1", folder / f"edge-{EDGE_ID}.pem"),
                  "no client certificate": wire_tls.client_config(folder / "ca.pem", "127.0.0.1")}[client]
    add_pending(TUPLES)
    try:
        if client == "plain tcp":
            cloud.hb_addr, cloud.data_addr = (a.replace("tls+tcp://", "tcp://") for a in (cloud.hb_addr, cloud.data_addr))
        beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.hb_addr, timeout_ms=500, tls=client_tls)
        try:
            # The reason comes from a probe in a thread of its own, which a busy machine can keep past the beat
            # that started it: the edge goes on beating, and the next beats say it.
            answered = [beat.handle_one_beat() for _ in range(4)]
            if client_tls is not None:
                wait_for(lambda: answered.append(beat.handle_one_beat()) or _told_why(), timeout=PROBE_WAIT_SECONDS)
            assert not any(answered)
        finally:
            beat.close()
    finally:
        cloud.stop()
    assert not redis_client.exists(Keys(cloud_prefix).edge(EDGE_ID))
    if client_tls is not None:  # the operator is told why, not only that nothing answered
        assert _told_why(), EdgeStatus.for_edge(EDGE_ID).last_error


def _told_why():
    return "the TLS handshake failed" in EdgeStatus.for_edge(EDGE_ID).last_error


def test_it_names_a_missing_certificate_file(tmp_path):
    with pytest.raises(wire_tls.TLSSetupError, match="nowhere.pem"):
        wire_tls.server_config(tmp_path / "nowhere.pem")


@pytest.mark.parametrize("setting", ["FOG_TLS_CA", "FOG_EDGE_TLS_CERT"])
def test_it_names_an_unusable_tls_file_of_an_edge_before_it_starts_a_loop(setting, certs, tmp_path, settings):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n" * 20)
    settings.FOG_TLS_CA, settings.FOG_EDGE_TLS_CERT = str(certs[0] / "ca.pem"), ""
    setattr(settings, setting, str(garbage))
    # Before the database, the supervisor and its workers: one line, not workers failing one after another.
    with pytest.raises(CommandError, match=rf"^TLS: (CA file|certificate) {garbage}: "):
        call_command("runedge", "--burst", "--timeout", "5")


def test_it_checks_the_tls_files_with_this_projects_code_from_any_folder(certs, tmp_path, settings, monkeypatch):
    # runedge checks them in an interpreter of its own (nng must not start in the supervisor); a `fogwire`
    # in the folder it runs from must not stand in for the project's and pass a bad file.
    (tmp_path / "fogwire").mkdir()
    (tmp_path / "fogwire" / "__init__.py").write_text("")
    (tmp_path / "fogwire" / "tls.py").write_text("print('ok')\n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    monkeypatch.chdir(tmp_path)
    settings.FOG_TLS_CA, settings.FOG_EDGE_TLS_CERT = "garbage.pem", ""  # relative: to the folder runedge runs in
    assert cloud_tls_problem().startswith("CA file garbage.pem: ")
    settings.FOG_TLS_CA = str(certs[0] / "ca.pem")
    assert cloud_tls_problem() is None
