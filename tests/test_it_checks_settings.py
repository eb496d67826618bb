import re

import pytest

from tests.conftest import run_manage


def test_it_passes_the_checks_with_no_environment():
    result = run_manage("check")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_it_refuses_equal_heartbeat_and_data_ports():
    result = run_manage("check", env={"FOG_HEARTBEAT_PORT": "7000", "FOG_DATA_PORT": "7000"})
    assert result.returncode != 0
    assert "fog.E001" in result.stderr
    assert "FOG_HEARTBEAT_PORT and FOG_DATA_PORT are both 7000" in result.stderr


@pytest.mark.parametrize("command", [["runedge"], ["runcloud"], ["reconcile"], ["chaos"], ["services", "status"],
                                     ["localadmin"]], ids="-".join)
def test_it_runs_the_pipelines_checks_as_a_command_that_shows_no_page_starts(command, tmp_path):
    """It runs the pipeline's checks, so a mistake stops it, and not the pages' (fogsite.checks.PIPELINE_CHECKS),
    whose URL check imports every view: Python's import log (-X importtime) shows no module of the pages. In a
    folder of its own, so that a command the checks no longer stopped would write nothing of the developer's."""
    result = run_manage(*command, env={"FOG_HEARTBEAT_PORT": "7000", "FOG_DATA_PORT": "7000",
                                       "FOG_VAR_DIR": str(tmp_path), "FOG_DATABASE_URL": f"sqlite:///{tmp_path}/edge.db",
                                       "PYTHONPROFILEIMPORTTIME": "1"}, timeout=60)
    assert result.returncode != 0 and "SystemCheckError" in result.stderr, result.stderr[-2000:]
    assert "fog.E001" in result.stderr
    imported = set(re.findall(r"^import time:.*\|\s*(\S+)$", result.stderr, re.MULTILINE))
    assert "django.contrib.auth" in imported  # the log is there
    assert not imported & {"fogsite.urls", "rest_framework.views", "drf_spectacular.views"}


def test_it_refuses_one_redis_database_for_edge_and_cloud():
    same = "redis://127.0.0.1:6379/3"
    result = run_manage("check", env={"FOG_EDGE_REDIS_URL": same, "FOG_CLOUD_REDIS_URL": same})
    assert result.returncode != 0
    assert "fog.E002" in result.stderr


def test_it_names_the_variable_of_a_malformed_value():
    result = run_manage("check", env={"FOG_WINDOW_SECONDS": "five"})
    assert result.returncode != 0
    assert "FOG_WINDOW_SECONDS='five': expected a whole number" in result.stderr


def test_it_refuses_a_port_out_of_range():
    result = run_manage("check", env={"FOG_DATA_PORT": "70000"})
    assert result.returncode != 0
    assert "FOG_DATA_PORT=70000: expected 1..65535" in result.stderr


def test_it_warns_about_the_development_edge_secret_on_deploy():
    result = run_manage("check", "--deploy", env={"DJANGO_SECRET_KEY": "x" * 60})
    assert "fog.W002" in result.stderr + result.stdout
    # A cloud host has no edge secret of its own: it is warned of the ones it takes (the default's, unset).
    cloud = run_manage("check", "--deploy", env={"DJANGO_SECRET_KEY": "x" * 60, "FOG_ROLE": "cloud"})
    assert "fog.W002" in cloud.stderr + cloud.stdout and "edges edge-1" in cloud.stderr + cloud.stdout
    strong = run_manage("check", "--deploy", env={"DJANGO_SECRET_KEY": "x" * 60, "FOG_ROLE": "cloud",
                                                  "FOG_EDGE_SECRETS": "edge-1:k3T9vQ2xLm8pR4sZ7wY1bN6cF0hJ5dG2"})
    assert "fog.W002" not in strong.stderr + strong.stdout


def test_it_reads_edge_secrets_from_a_file_and_names_an_unreadable_one(tmp_path):
    missing = run_manage("check", env={"FOG_EDGE_SECRETS_FILE": str(tmp_path / "absent")})
    assert missing.returncode != 0 and "fog.E006" in missing.stderr
    secrets = tmp_path / "secrets"
    secrets.write_text("# one pair a line\nedge-1:first-secret\nedge-2:second-secret\n")
    assert run_manage("check", env={"FOG_EDGE_SECRETS_FILE": str(secrets)}).returncode == 0
    secrets.write_text("edge-1:\nmeant-for-edge-2-0123456789abcdef\n")  # a secret without its id
    broken = run_manage("check", env={"FOG_EDGE_SECRETS_FILE": str(secrets)})
    assert "fog.E003" in broken.stderr and "edge ids: edge-1, entry 2, which has no ':'" in broken.stderr
    assert "meant-for-edge-2" not in broken.stderr  # a line naming the entry never shows what may be a secret


def test_it_keeps_a_comma_in_a_secrets_file_as_part_of_the_secret(tmp_path):
    from cloud_app.secrets import read_edge_secrets

    path = tmp_path / "edge-secrets"
    path.write_text("edge-1:Ab3x,Qk9.Zr7w-rest-of-it\nedge-2:second-secret\n")  # one pair a line, as documented
    assert read_edge_secrets("", str(path)) == ({"edge-1": "Ab3x,Qk9.Zr7w-rest-of-it", "edge-2": "second-secret"}, [])
    path.write_text("edge-1:first-secret,edge-2:second-secret\n")  # pairs on one line, as the inline setting has them
    pairs, problems = read_edge_secrets("", str(path))
    assert "edge-1" not in pairs and [p.kind for p in problems] == ["malformed"]
    assert "edge-1 (its line holds more pairs" in problems[0].message and "second-secret" not in problems[0].message
    assert read_edge_secrets("edge-1:one,edge-2:two", "") == ({"edge-1": "one", "edge-2": "two"}, [])  # inline: commas


@pytest.mark.parametrize("edge, cloud", [
    ("redis://localhost:6379/20", "redis://127.0.0.1:6379/20"),  # two names of one loopback
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1"),  # default port and database written out or left out
    ("redis://127.0.0.1:6379/5", "redis://LOCALHOST/?db=5"),  # database as a query
])
def test_it_sees_one_redis_database_under_two_spellings(edge, cloud):
    result = run_manage("check", env={"FOG_EDGE_REDIS_URL": edge, "FOG_CLOUD_REDIS_URL": cloud})
    assert result.returncode != 0
    assert "fog.E002" in result.stderr


def test_it_accepts_two_databases_of_one_redis():
    result = run_manage("check", env={"FOG_EDGE_REDIS_URL": "redis://localhost/20",
                                      "FOG_CLOUD_REDIS_URL": "redis://127.0.0.1:6379/21"})
    assert result.returncode == 0, result.stderr


CLUSTER = "redis+cluster://127.0.0.1:7000/"


def test_it_gives_a_cluster_store_a_plain_channel_layer_redis_by_default():
    result = run_manage("check", env={"FOG_CLOUD_REDIS_URL": CLUSTER})
    assert result.returncode == 0, result.stderr
    result = run_manage("shell", "-c", "from django.conf import settings; print(settings.CHANNEL_LAYERS['default']"
                        "['CONFIG']['hosts'][0]['address'])", env={"FOG_CLOUD_REDIS_URL": CLUSTER})
    assert result.stdout.strip().splitlines()[-1] == "redis://127.0.0.1:6379/2", result.stderr


@pytest.mark.parametrize("channel, error", [
    ("redis://127.0.0.1:7000/0", "fog.E021"),  # a node of the cloud's cluster
    ("redis://localhost:7002/0", "fog.E021"),  # its third local master
    ("redis://127.0.0.1:6379/0", "fog.E022"),  # the edge's job queue
])
def test_it_refuses_a_channel_layer_redis_it_cannot_use(channel, error):
    result = run_manage("check", env={"FOG_CLOUD_REDIS_URL": CLUSTER, "FOG_CHANNEL_REDIS_URL": channel})
    assert result.returncode != 0
    assert error in result.stderr


@pytest.mark.parametrize("edge", ["redis://127.0.0.1:7000/0", "redis://127.0.0.1:7001/5"])
def test_it_refuses_an_edge_job_queue_on_a_node_of_the_clouds_cluster(edge):
    result = run_manage("check", env={"FOG_ROLE": "all", "FOG_CLOUD_REDIS_URL": CLUSTER, "FOG_EDGE_REDIS_URL": edge})
    assert result.returncode != 0
    assert "fog.E002" in result.stderr


def test_it_accepts_an_edge_job_queue_beside_the_clouds_local_cluster():
    result = run_manage("check", env={"FOG_ROLE": "all", "FOG_CLOUD_REDIS_URL": CLUSTER,
                                      "FOG_EDGE_REDIS_URL": "redis://127.0.0.1:7003/0"})
    assert result.returncode == 0, result.stderr


def test_it_names_a_cluster_url_with_a_database():
    result = run_manage("check", env={"FOG_CLOUD_REDIS_URL": "redis+cluster://127.0.0.1:7000/3"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("FOG_CLOUD_REDIS_URL='redis+cluster://127.0.0.1:7000/3': a Redis Cluster has "
                                     "only database 0; write redis+cluster://127.0.0.1:7000/")


def test_it_warns_of_a_live_grace_longer_than_the_grace():
    result = run_manage("check", env={"FOG_GRACE_SECONDS": "1", "FOG_LIVE_GRACE_SECONDS": "3"})
    assert "fog.W004" in result.stderr and "FOG_LIVE_GRACE_SECONDS=3.0 is longer than" in result.stderr


# The edge secrets' mistakes, each named with the file (or FOG_EDGE_SECRETS) by `check`, and by runcloud,
# which refuses the first; in this process: the checks read the settings as they are when called.
@pytest.mark.parametrize("content, check, message", [
    (b"edge-b:\xff\xfe-not-text\n", "fog.E006", "FOG_EDGE_SECRETS_FILE={}: not UTF-8 text (byte 8 of the file)"),
    (b"edge-a:first-secret\nedge-b:other-secret\nedge-a:second-secret\n", "fog.E007",
     "FOG_EDGE_SECRETS_FILE={} lists edge ids more than once: edge-a"),
    (b"", "fog.E008", "FOG_EDGE_SECRETS_FILE={} holds no id:secret pairs: no edge could deliver"),
    (b"# only a comment\n", "fog.E008", "FOG_EDGE_SECRETS_FILE={} holds no id:secret pairs: no edge could deliver"),
])
def test_it_names_an_edge_secrets_file_it_cannot_use(content, check, message, tmp_path, settings):
    from cloud_app.run import CloudStartError, edge_secrets
    from fogsite.checks import check_pipeline_settings

    path = tmp_path / "edge-secrets"
    path.write_bytes(content)
    path.chmod(0o600)
    settings.FOG_EDGE_SECRETS_FILE = str(path)
    found = [(error.id, error.msg) for error in check_pipeline_settings(None) if error.id.startswith("fog.E")]
    assert found == [(check, message.format(path))]
    with pytest.raises(CloudStartError, match=re.escape(message.format(path))):
        edge_secrets()


def test_it_names_an_edge_listed_twice_in_the_secrets(settings):
    from fogsite.checks import check_pipeline_settings

    settings.FOG_EDGE_SECRETS_FILE, settings.FOG_EDGE_SECRETS = "", "e1:one-secret,e2:two-secret,e1:another-secret"
    assert [(error.id, error.msg) for error in check_pipeline_settings(None) if error.id.startswith("fog.E")] == [
        ("fog.E007", "FOG_EDGE_SECRETS lists edge ids more than once: e1")]


@pytest.mark.parametrize("query, timeout", [("", 10), ("?connect_timeout=3", 3)])
def test_it_bounds_how_long_a_connect_to_an_edge_database_on_postgresql_waits(query, timeout):
    """A database host that drops packets: without a connect timeout psycopg waits for TCP's own (minutes), and so
    would every loop's outage handling and runedge's stop."""
    result = run_manage("shell", "-c", "from django.conf import settings; "
                        "print(settings.DATABASES['default']['OPTIONS']['connect_timeout'])",
                        env={"FOG_DATABASE_URL": f"postgres://fog:secret@192.0.2.1:5432/fog{query}"})
    assert result.returncode == 0 and result.stdout.split()[-1:] == [str(timeout)], result.stderr
