"""A seeded, bounded random-frame fuzz of a real runcloud's data port: it answers every frame and serves on."""

import os
import random
import subprocess
import sys
import time
import uuid

import msgpack
import pynng
import pytest

from tooling.net import port_open
from fogwire import protocol as wire
from tests.conftest import ROOT, free_port, make_rows, wait_for

SECONDS = float(os.environ.get("FOG_FUZZ_SECONDS", "6"))  # longer: FOG_FUZZ_SECONDS=600
SEED = 20191224
MAX_FRAME = 64 * 1024
EDGE, SECRET = "fuzz-edge", "fuzz-secret-0123456789"


def _random_value(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.randrange(-2**63, 2**63)
    if kind == 1:
        return rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e308, rng.random() * 1e6])
    if kind == 2:
        return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(20)))
    if kind == 3:
        return rng.randbytes(rng.randrange(20))
    if kind == 4:
        return None
    if kind == 5:
        return rng.choice([True, False])
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    keys = ["v", "kind", "id", "hh", "ws", "we", "avg", "n", "plz", rng.choice(["x", "", "🙂"])]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(8))}


def _frame(rng):
    """Random bytes, mangled valid frames, and correctly tagged frames with random bodies (so they get parsed)."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(MAX_FRAME))
    if kind == 1:
        return wire.MAGIC + rng.randbytes(rng.randrange(200))
    valid = wire.batch_frame(EDGE, SECRET, make_rows(rng.randrange(1, 50), household="fz", start_id=rng.randrange(10**6)))
    if kind == 2:
        flipped = bytearray(valid)
        for _ in range(rng.randrange(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == 3:
        return valid[: rng.randrange(len(valid))]
    if kind == 4:
        payload = {k: _random_value(rng) for k in ("id", "hh", "ws", "we", "avg", "n")}
    else:
        payload = _random_value(rng)
    body = msgpack.packb(payload, use_bin_type=True)[:MAX_FRAME]
    head = bytes((wire.KIND_BATCH, len(EDGE))) + EDGE.encode() + rng.randbytes(wire.NONCE_BYTES)
    return wire.MAGIC + head + wire._tag(SECRET, wire.KIND_BATCH, head, body) + body


@pytest.mark.slow
@pytest.mark.serial  # a rate: over 1,000 frames in the fuzz's seconds
def test_it_answers_every_random_frame_and_still_stores_a_good_batch(services):
    hb, data = free_port(), free_port()
    env = {**os.environ, "FOG_CLOUD_KEY_PREFIX": f"fuzz:{uuid.uuid4().hex[:8]}:", "FOG_EDGE_SECRETS": f"{EDGE}:{SECRET}"}
    cloud = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runcloud", "--heartbeat-port", str(hb),
                              "--data-port", str(data), "-v", "0"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    rng = random.Random(SEED)
    sent = answered = 0
    try:
        assert wait_for(lambda: port_open("127.0.0.1", data), timeout=30, interval=0.2)
        with pynng.Req0(dial=f"tcp://127.0.0.1:{data}", recv_timeout=5000, send_timeout=5000, recv_max_size=0) as sock:
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline:
                sock.send(_frame(rng))
                sent += 1
                if sock.recv():
                    answered += 1
            assert cloud.poll() is None, "the cloud died under the fuzz"
            rows = make_rows(20, household="after-fuzz", start_id=10**9)
            request = wire.batch_frame(EDGE, SECRET, rows)
            sock.send(request)
            codes, reasons = wire.read_reply(sock.recv(), request, SECRET, 20)
    finally:
        cloud.terminate()
        cloud.wait(10)
    assert sent > 1000 and answered == sent  # every frame got a reply, none a timeout
    assert reasons == [""] * 20 and all(len(c) == 5 for c in codes)
