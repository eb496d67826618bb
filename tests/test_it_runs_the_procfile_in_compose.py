"""docker-compose.yml runs the whole stack: Kafka, Redis, the migration, and every Procfile process as a
service with the same command and the same settings. No Docker engine here: the file is read with PyYAML
and held against the Procfile and the settings the app reads."""

import re
import shlex

import yaml

from tests.conftest import ROOT

DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
SETTINGS_SOURCE = (ROOT / "fogsite" / "settings.py").read_text()


def expand(token):
    """What a `${NAME:-default}` gives with NAME unset, in the Procfile (a shell) and in compose alike."""
    return DEFAULTED.sub(lambda m: m.group(2), token)


# What each Procfile line starts with, for honcho (a container ends with its own process instead).
UNDER_HONCHO = ["exec", "setpriv", "--pdeathsig", "TERM"]


def normalise(tokens):
    tokens = [expand(t) for t in tokens]
    if tokens[:len(UNDER_HONCHO)] == UNDER_HONCHO:
        tokens = tokens[len(UNDER_HONCHO):]
    tokens[0] = tokens[0].removeprefix(".venv/bin/")
    return tokens


def procfile():
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = normalise(shlex.split(command))
    return entries


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_it_has_a_service_with_the_same_command_for_every_procfile_process():
    services = compose()
    processes = procfile()
    assert {"kafka", "redis", "migrate"} | set(processes) <= set(services)
    for name, command in processes.items():
        assert "command" in services[name], name
        theirs = normalise(list(services[name]["command"]))
        if "--host" in command:
            # A container must listen on 0.0.0.0 for its published port; everything else is the same.
            at = command.index("--host")
            assert command[at + 1] == "127.0.0.1" and theirs[at + 1] == "0.0.0.0", name
            theirs[at + 1] = command[at + 1]
        assert theirs == command, name


def test_it_gives_every_app_service_the_same_settings_and_publishes_only_on_loopback():
    services = compose()
    apps = {name: service for name, service in services.items() if "build" in service}
    assert set(procfile()) | {"migrate"} <= set(apps)
    environments = [service["environment"] for service in apps.values()]
    assert all(env == environments[0] for env in environments)
    for variable in environments[0]:
        assert f'"{variable}"' in SETTINGS_SOURCE, f"{variable} is not a setting fogsite/settings.py reads"
    env = environments[0]
    assert env["FOG_CLOUD_HOST"] == "cloud" and env["FOG_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["FOG_EDGE_REDIS_URL"] != env["FOG_CLOUD_REDIS_URL"]
    # The cloud listens beyond loopback on the compose network: no secret may default.
    for secret in ("FOG_EDGE_SECRET", "DJANGO_SECRET_KEY"):
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", env[secret]), f"{secret} must be required, not defaulted"
    for name, service in services.items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond loopback"


def test_it_starts_the_app_only_on_healthy_services_and_after_the_migration():
    services = compose()
    for name in ("kafka", "redis"):
        assert "healthcheck" in services[name], name
    for name in ("web", "edge"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["kafka"] == depends["redis"] == {"condition": "service_healthy"}, name


def test_it_links_edge_and_cloud_containers_over_tls_with_certificates_made_first():
    """The edge is another container: the cloud must listen beyond loopback, so with TLS, from certificates
    the certs service has made before the cloud or the migration's checks look for them."""
    services = compose()
    env = services["cloud"]["environment"]
    assert expand(env["FOG_CLOUD_BIND"]) == "0.0.0.0"
    command = services["certs"]["command"]
    folder = command[command.index("--dir") + 1]
    assert command[command.index("--cloud-name") + 1] == env["FOG_CLOUD_HOST"]
    assert env["FOG_CLOUD_TLS_CERT"] == f"{folder}/cloud.pem" and env["FOG_TLS_CA"] == f"{folder}/ca.pem"
    for name in ("cloud", "migrate"):  # the edge and the web wait for the migration
        assert services[name]["depends_on"]["certs"] == {"condition": "service_completed_successfully"}, name
    assert all(f"tls:{folder}" in service["volumes"] for service in services.values() if "build" in service)
