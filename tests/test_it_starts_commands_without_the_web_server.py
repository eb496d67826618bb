"""Only `runserver` loads Daphne and Twisted: every other process (an edge worker, which the supervisor
restarts after a crash, the cloud, the simulation, each `manage.py` call) starts without them; and
`runserver` still serves the dashboard's websocket."""

import os
import subprocess
import sys

from tests.conftest import ROOT, dashboard_summary, free_port, make_rows, stored_by_a_cloud, wait_for
from tooling.net import port_open

LOADED = """
import sys
import django
from django.core.management import load_command_class

django.setup()
for app, name in [("edge_app", "runedge"), ("django_rq", "rqworker"), ("cloud_app", "runcloud"),
                  ("simulation", "runsimulation")]:
    load_command_class(app, name)
print(sorted({name.split(".")[0] for name in sys.modules} & {"daphne", "twisted", "autobahn"}))
"""


def test_it_starts_the_pipelines_commands_without_daphne_or_twisted():
    result = subprocess.run([sys.executable, "-c", LOADED], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "fogsite.settings"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_it_serves_the_dashboards_websocket_from_runserver(tmp_path, redis_url, cloud_prefix):
    stored_by_a_cloud(redis_url, cloud_prefix, make_rows(12, household="runserver"))
    port = free_port()
    env = {**os.environ, "FOG_ROLE": "cloud", "FOG_VAR_DIR": str(tmp_path), "FOG_CLOUD_REDIS_URL": redis_url,
           "FOG_CLOUD_KEY_PREFIX": cloud_prefix}
    with open(tmp_path / "runserver.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", port), timeout=60, interval=0.2), \
            (tmp_path / "runserver.log").read_text()
        summary = dashboard_summary(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(10)
    assert summary["type"] == "summary" and sum(row["tuples"] for row in summary["states"]) == 12
