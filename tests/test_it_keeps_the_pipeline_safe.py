"""Safe defaults: loopback only, DEBUG off, secrets out of logs (wrong secrets and the admin login are
checked in test_it_refuses_bad_frames and test_it_keeps_the_admin_useful)."""

import os
import subprocess
import sys
import uuid

import pynng

from tooling.net import listeners, port_open
from fogwire import protocol as wire
from tests.conftest import ROOT, free_port, run_manage, wait_for


def test_it_keeps_debug_off_unless_asked():
    show = ["shell", "--no-imports", "-c", "from django.conf import settings; print(settings.DEBUG)"]
    assert run_manage(*show).stdout.strip() == "False"
    assert run_manage(*show, env={"DJANGO_DEBUG": "1"}).stdout.strip() == "True"


def test_it_binds_the_cloud_to_loopback_and_keeps_secrets_out_of_its_log(services):
    secret, wrong = "Sx7-never-in-a-log", "Wq3-never-in-a-log"
    hb, data = free_port(), free_port()
    env = {**os.environ, "FOG_EDGE_SECRETS": f"e1:{secret}", "FOG_CLOUD_KEY_PREFIX": f"sec:{uuid.uuid4().hex[:6]}:"}
    cloud = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runcloud", "--heartbeat-port", str(hb),
                              "--data-port", str(data), "-v", "2"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", data), timeout=30, interval=0.2)
        assert set(listeners(data).values()) == {"0100007F"} and set(listeners(hb).values()) == {"0100007F"}  # 127.0.0.1 only
        with pynng.Req0(dial=f"tcp://127.0.0.1:{data}", recv_timeout=3000) as sock:
            for frame in (wire.batch_frame("e1", wrong, [(1, "h", 1_577_142_000_000, 1_577_142_005_000, 1.0, 1)]),
                          wire.heartbeat("e1", wrong), wire.batch_frame("e2", secret, [])):
                sock.send(frame)
                sock.recv()
    finally:
        cloud.terminate()
        log = cloud.communicate(timeout=10)[0]
    assert "refused" in log  # the refusals were logged...
    assert secret not in log and wrong not in log  # ...without either secret
