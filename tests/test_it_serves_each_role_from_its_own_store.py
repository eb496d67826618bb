"""FOG_ROLE: an edge host's web process serves the admin, the edge's health page and the edge's metrics;
a cloud host's serves the dashboard, API, websocket and the cloud's metrics. Each runs as a real uvicorn
child with its own var folder, and the other side's store is a closed port, so a request that touched
it would fail."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import EDGE_ID, ROOT, dashboard_summary, free_port, make_rows, run_manage, stored_by_a_cloud, \
    wait_for
from tooling.net import port_open


def closed_port():
    return free_port()  # bound and released: nothing listens there


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def web_role(tmp_path):
    procs = []

    def start(role, env):
        port = free_port()
        var = tmp_path / role
        var.mkdir()
        full = {**os.environ, "FOG_ROLE": role, "FOG_VAR_DIR": str(var), **env}
        migrated = run_manage("migrate", "-v", "0", env=full) if role == "edge" else None
        assert migrated is None or migrated.returncode == 0, migrated.stderr
        log = open(var / "web.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "uvicorn", "fogsite.asgi:application", "--host",
                                       "127.0.0.1", "--port", str(port), "--log-level", "warning", "--lifespan", "off"], cwd=ROOT,
                                      env=full, stdout=log, stderr=subprocess.STDOUT))
        assert wait_for(lambda: port_open("127.0.0.1", port), timeout=60, interval=0.2), (var / "web.log").read_text()
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_it_serves_an_edge_host_without_reaching_the_cloud_redis(web_role, tmp_path):
    base = web_role("edge", {"FOG_DATABASE_URL": f"sqlite:///{tmp_path / 'edge.sqlite3'}", "FOG_EDGE_ID": "edge-far",
                             "FOG_CLOUD_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"})
    status, body = get(f"{base}/edge/health/")
    assert status == 200, body
    assert "Edge health" in body and "0 pending" in body
    assert "/api/docs/" not in body and 'href="/"' not in body  # no links to what a cloud host serves

    status, body = get(f"{base}/metrics")
    assert status == 200, body
    assert 'fog_edge_tuples{status="pending"} 0.0' in body
    assert "fog_cloud_" not in body

    assert get(f"{base}/admin/login/")[0] == 200
    for cloud_only in ("/", "/api/states/", "/api/edges/"):
        assert get(base + cloud_only)[0] == 404, cloud_only


def test_it_serves_a_cloud_host_without_reaching_the_edge_database_or_queue(web_role, redis_url, cloud_prefix):
    stored_by_a_cloud(redis_url, cloud_prefix, make_rows(40, household="role"))
    closed = closed_port()
    base = web_role("cloud", {"FOG_CLOUD_REDIS_URL": redis_url, "FOG_CLOUD_KEY_PREFIX": cloud_prefix,
                              "FOG_DATABASE_URL": f"postgres://fog:fog@127.0.0.1:{closed}/edge",
                              "FOG_EDGE_REDIS_URL": f"redis://127.0.0.1:{closed}/0"})
    status, body = get(f"{base}/api/states/")
    assert status == 200, body
    assert sum(row["tuples"] for row in json.loads(body)) == 40
    status, body = get(f"{base}/api/edges/")
    assert status == 200 and [row["edge"] for row in json.loads(body)] == [EDGE_ID]
    assert get(f"{base}/")[0] == 200

    status, body = get(f"{base}/metrics")
    assert status == 200, body
    assert "fog_cloud_tuples_total 40.0" in body
    assert "fog_edge_" not in body

    summary = dashboard_summary(base)
    assert summary["type"] == "summary"
    assert sum(row["tuples"] for row in summary["states"]) == 40

    for edge_only in ("/admin/login/", "/edge/health/"):
        assert get(base + edge_only)[0] == 404, edge_only

