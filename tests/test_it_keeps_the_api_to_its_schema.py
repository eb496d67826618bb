"""schemathesis, with all its checks, against the real API: uvicorn serving fogsite.asgi, on the
test Redis with tuples stored through the real cloud. Any query string gets a 200 or a documented 400, and every
reply matches the schema (which the views' serializers produce)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EDGE_ID, EDGE_SECRET, ROOT, make_rows, store_through_cloud
from fogwire import protocol as wire
from tooling.net import free_port, port_open, wait_for

SCHEMATHESIS = str(Path(sys.executable).parent / "st")  # its CLI, installed beside this Python


@pytest.mark.timeout(900)
def test_it_answers_every_query_string_as_its_schema_says(cloud, redis_url, cloud_prefix, tmp_path):
    store_through_cloud(cloud, make_rows(300, household="fuzz"))
    cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=3), data=False)
    port = free_port()
    env = {**os.environ, "FOG_CLOUD_REDIS_URL": redis_url, "FOG_CLOUD_KEY_PREFIX": cloud_prefix}
    web = subprocess.Popen([sys.executable, "-m", "uvicorn", "fogsite.asgi:application", "--host", "127.0.0.1",
                            "--port", str(port), "--no-access-log", "--lifespan", "off", "--log-level", "warning"],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", port) or web.poll() is not None, timeout=60)
        assert web.poll() is None, web.stderr.read()
        run = subprocess.run([SCHEMATHESIS, "run", f"http://127.0.0.1:{port}/api/schema/", "--checks", "all",
                              "--max-examples", "60", "--seed", "13", "--workers", "1", "--no-color",
                              "--generation-database", "none", "--request-timeout", "30"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        selected, total = re.search(r"Selected: (\d+)/(\d+)", run.stdout).groups()
        assert selected == total and f"Tested: {total}" in run.stdout, run.stdout[-3000:]  # every operation
        assert "No issues found" in run.stdout, run.stdout[-3000:]
    finally:
        web.terminate()
        try:
            web.wait(10)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()
