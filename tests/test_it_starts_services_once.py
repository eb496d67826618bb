import threading
from pathlib import Path

from django.conf import settings

from tests.conftest import ROOT, free_port, run_manage


def _pids():
    run = Path(settings.VAR_DIR) / "run"
    return {p.name: p.read_text() for p in run.glob("*.pid")}


def test_it_starts_nothing_when_everything_already_runs(services):
    before = _pids()
    result = run_manage("services", "up")
    assert result.returncode == 0, result.stderr
    assert "kafka: already running" in result.stdout
    assert "redis: already running" in result.stdout
    assert "started on" not in result.stdout
    assert _pids() == before


def test_it_reports_what_runs(services):
    result = run_manage("services", "status")
    assert result.returncode == 0, result.stderr
    assert "kafka: running" in result.stdout or "kafka: something not started by us" in result.stdout
    assert "redis: running" in result.stdout or "redis: something not started by us" in result.stdout


def test_it_leaves_an_external_broker_alone(tmp_path):
    result = run_manage("services", "status", env={"FOG_KAFKA_BOOTSTRAP": "kafka.example.invalid:9092",
                                                   "FOG_VAR_DIR": str(tmp_path)})
    assert "kafka: external at kafka.example.invalid:9092" in result.stdout


def test_it_runs_a_local_cluster_when_the_clouds_url_asks_for_one(tmp_path):
    from tooling.net import free_port

    port = free_port()
    result = run_manage("services", "status", env={"FOG_CLOUD_REDIS_URL": f"redis+cluster://127.0.0.1:{port}/",
                                                   "FOG_VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f"redis-cluster-{port}: stopped" in result.stdout  # `services up` starts it (as the test session does)



def test_it_starts_one_server_when_two_ups_run_at_once(tmp_path):
    """Two terminals, or the workers of `make test`, asking at the same moment."""
    from tooling.localservices import Paths, Redis

    port = free_port()
    together = threading.Barrier(2)
    started, errors = [], []

    def up():
        service = Redis(Paths(ROOT, tmp_path), "127.0.0.1", port)
        together.wait()
        try:
            started.append(service.up(lambda line: None))
        except Exception as error:  # noqa: BLE001 -- the assertion below names it
            errors.append(error)

    ups = [threading.Thread(target=up) for _ in range(2)]
    try:
        for thread in ups:
            thread.start()
        for thread in ups:
            thread.join(60)
        assert not errors and sorted(started) == [False, True], (errors, started)  # one started it, one found it
    finally:
        Redis(Paths(ROOT, tmp_path), "127.0.0.1", port).down(lambda line: None)


def test_it_takes_a_stale_pid_file_naming_another_redis_for_none_of_its_own(tmp_path, services):
    """After a crash a pid file may name a pid since reused by another Redis (the system's, a test's own, a cluster
    node): `services down` would have killed it, and `status` reported it as ours."""
    from tooling.localservices import Paths, Redis

    theirs = Redis(Paths(ROOT, Path(settings.VAR_DIR)), "127.0.0.1", 6379).our_pid()  # the suite's own
    assert theirs
    mine = Redis(Paths(ROOT, tmp_path), "127.0.0.1", free_port())
    mine.pidfile.parent.mkdir(parents=True, exist_ok=True)
    mine.pidfile.write_text(str(theirs))
    assert mine.our_pid() is None
    assert "redis-" in mine.status() and "stopped" in mine.status()
    prefix = Redis(Paths(ROOT, tmp_path), "127.0.0.1", 637)  # its port, the suite's but one digit
    prefix.pidfile.write_text(str(theirs))
    assert prefix.our_pid() is None
