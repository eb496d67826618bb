"""The first broker started on a set of Kafka jars has their classes recorded; every later broker maps them."""

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import ROOT
from tooling.chaos.pipeline import _free_pair
from tooling.localservices import Kafka, Paths


def _maps(pid):
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture
def own_jars(services, tmp_path):
    """The suite's jars, in a folder of this test's own, so the archive is recorded here."""
    shared = Path(settings.VAR_DIR) / "kafka" / "libs"
    libs = tmp_path / "libs"
    libs.mkdir()
    for jar in shared.glob("*.jar"):
        (libs / jar.name).symlink_to(jar)
    shutil.copy(shared / ".resolved", libs / ".resolved")  # resolved already: nothing to fetch
    return libs


@pytest.mark.slow
def test_it_records_the_classes_once_and_starts_later_brokers_from_them(own_jars, tmp_path):
    other_jvms = own_jars / "classes-0-0.jsa"  # an archive another JVM build recorded: useless to this one
    other_jvms.write_bytes(b"not for this JVM")
    kafka = Kafka(Paths(ROOT, tmp_path / "var", libs=own_jars), "127.0.0.1", _free_pair())
    kafka.short_lived = True  # the first compiler alone: the broker serves nothing here
    lines = []
    try:
        assert kafka.up(lines.append)
        archive = kafka.class_archive()
        assert any(f"recorded its classes for faster starts in {archive}" in line for line in lines), lines
        assert not other_jvms.exists()
        assert not list(own_jars.glob(".*.part"))  # written under a name of its own, renamed once a JVM mapped it
        kafka.down(lambda line: None)

        lines.clear()
        assert kafka.up(lines.append)
        assert not any("recorded" in line for line in lines), lines  # once
        assert str(archive) in _maps(kafka.our_pid())  # started from it
    finally:
        kafka.down(lambda line: None)
