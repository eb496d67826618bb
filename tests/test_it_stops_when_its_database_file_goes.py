"""A SQLite edge database removed or replaced under a running edge (`rm -rf var/`) ends the run, saying so:
its workers' open handles went on writing into the unlinked file, acknowledged tuples and all, and nothing
said a word until the next start found an empty database."""

import sqlite3

import pytest

from edge_app.supervisor import Supervisor


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_it_ends_the_run_when_its_database_file_is_removed_or_replaced(how, tmp_path, settings, services):
    # The check reads only where the file is: a file of the test's own stands in for the edge's database.
    path = tmp_path / "edge.sqlite3"
    sqlite3.connect(path).close()
    settings.DATABASES = {"default": {**settings.DATABASES["default"], "NAME": str(path)}}
    supervisor = Supervisor({"burst": False}, stop_flag=lambda: False, out=lambda line: None)
    supervisor.start(with_workers=False)
    try:
        assert supervisor.handle_one_check() is None
        path.unlink()
        if how == "replaced":
            sqlite3.connect(path).close()
        assert supervisor.handle_one_check() == "failed"
        assert f"the edge database file {path} was removed or replaced" in supervisor.failure
    finally:
        supervisor.stop()
