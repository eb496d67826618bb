"""The cloud's link to its Redis dropped half-open (a NAT between them that forgot an idle connection, as cloud
NATs do after minutes): a store call gets no answer and no error. It gives up after STORE_SOCKET_TIMEOUT_S
and answers `store-unavailable` (the edge sends the batch again), instead of hanging that request and those
behind it until the kernel gives up a quarter of an hour later; the next batch is stored on a new
connection."""

import time
from urllib.parse import urlsplit

from django.conf import settings

from cloud_app import run
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, deliver, free_port, make_rows
from tooling.chaos.proxy import Proxy

TIMEOUT_S = 1.0


def test_it_answers_store_unavailable_then_stores_on_a_new_connection(services, cloud_prefix, monkeypatch):
    monkeypatch.setattr(run, "STORE_SOCKET_TIMEOUT_S", TIMEOUT_S)
    store = urlsplit(settings.FOG_CLOUD_REDIS_URL)
    proxy = Proxy(free_port(), store.port or 6379, host=store.hostname).start()
    cloud = CloudThread(f"redis://{store.hostname}:{proxy.listen_port}/0", cloud_prefix,
                        {EDGE_ID: EDGE_SECRET}).start()
    try:
        assert deliver(cloud, make_rows(5))[1] == [""] * 5
        proxy.freeze()
        rows = make_rows(5, start_id=5, base_ms=1_600_000_000_000)
        request = wire.batch_frame(EDGE_ID, EDGE_SECRET, rows)
        began = time.monotonic()
        reply = cloud.request(request, timeout_ms=int(TIMEOUT_S * 1000) + 4000)
        assert wire.read_error(reply)[0] == wire.R_STORE_DOWN and time.monotonic() - began < TIMEOUT_S + 3
        assert deliver(cloud, rows)[1] == [""] * 5  # a new connection, through the same address
    finally:
        cloud.stop()
        proxy.stop()
