"""Shared fixtures: the real local services, and per-test isolation on them.

The session starts (or finds) the project's own Kafka and Redis through the
same code as `make services`; a service that can't be had is an error, never
a skip. Each test gets its own Kafka topic and a freshly emptied Redis
database reserved for tests, so tests never see each other's data.
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_DB = int(os.environ.get("FOG_TEST_REDIS_DB", "15"))


@pytest.fixture(scope="session")
def services():
    from fogsite.localservices import services as all_services

    for service in all_services(settings, settings.BASE_DIR, settings.VAR_DIR):
        service.up(lambda line: None)
        if not service.ready():
            pytest.fail(f"{service.name} is not answering at {service.host}:{service.port}", pytrace=False)
    return settings


@pytest.fixture(scope="session")
def kafka_bootstrap(services):
    return settings.FOG_KAFKA_BOOTSTRAP


@pytest.fixture
def topic(kafka_bootstrap):
    """A fresh topic with 3 partitions, deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="fog-tests")
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    yield name
    try:
        admin.delete_topics([name])
    finally:
        admin.close()


@pytest.fixture
def redis_url(services):
    """URL of a Redis database reserved for tests, emptied before each test."""
    base = settings.FOG_CLOUD_REDIS_URL.rsplit("/", 1)[0]
    url = f"{base}/{TEST_REDIS_DB}"
    redis_lib.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def redis_client(redis_url):
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_manage(*args, env=None, timeout=120):
    """Run `manage.py` as a user would, in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
