"""The edge's database tests run on SQLite and on PostgreSQL 15, and the PostgreSQL pass cleans up after itself.

`make test` runs everything on SQLite, then the tests marked edge_db again with
`--edge-database postgres` on a PostgreSQL the session starts and stops (tests/edge_database.py).
Here: that each pass really is on its engine (in this process and in a child edge), that an edge
with tuples in it upgrades through every migration on it, and that an interrupted PostgreSQL pass
stops its server and removes its folder.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from edge_app.household_index import HouseholdIndexer
from edge_app.models import EdgeStatus, HouseholdEntry, Status, WindowAggregate
from edge_app.processes import with_environment
from tests.conftest import ROOT, SESSION_ENV, edge_db, wait_for
from tests.edge_database import OPTION, VENDOR, engine
from tooling.net import port_open

T0 = 1_577_142_000_000
SERVER_VERSION = {"sqlite": "select 'sqlite ' || sqlite_version()", "postgres": "select version()"}
EDGE_MIGRATIONS = sorted(p.stem for p in (ROOT / "edge_app" / "migrations").glob("0*.py"))
# What the sender, retention, the admin, the link history and the ingest's resume rely on.
EDGE_INDEXES = {"edge_app_windowaggregate": {"one_tuple_per_window_household", "sender_next", "retention_acked",
                                             "admin_day_id"},
                "edge_app_householdentry": {"household_index"},
                "edge_app_linkchange": {"link_history"},
                "edge_app_ingestposition": {"one_position_per_partition"}}


@pytest.mark.edge_db
def test_it_runs_in_process_and_in_a_child_edge_on_the_engine_the_session_chose(request, db, edge_env):
    chosen = engine(request.config)
    assert connection.vendor == VENDOR[chosen]
    if chosen == "postgres":
        assert connection.pg_version // 10000 == 15, connection.pg_version
    with edge_db(edge_env) as child:  # a copy of what the worker's `migrate` wrote (migrated_edge_database)
        version = child.execute(SERVER_VERSION[chosen]).fetchone()[0]
        applied = [name for (name,) in child.execute(
            "select name from django_migrations where app = 'edge_app' order by name").fetchall()]
    assert version.startswith("PostgreSQL 15." if chosen == "postgres" else "sqlite "), version
    assert applied == EDGE_MIGRATIONS


@pytest.mark.edge_db
def test_it_upgrades_an_edge_with_tuples_through_every_migration(transactional_db):
    WindowAggregate.objects.bulk_create([
        WindowAggregate(household=f"house-{i % 3}", window_start=T0 + i * 5000, window_end=T0 + i * 5000 + 5000,
                        day="2019-12-24", average_w=10.0 + i, readings=2, status=Status.ACKED if i % 2 else Status.PENDING)
        for i in range(30)])
    EdgeStatus.objects.create(edge_id="edge-1", connected=True, acked=15)
    try:
        call_command("migrate", "edge_app", EDGE_MIGRATIONS[0], verbosity=0)  # the first release's schema
        with connection.cursor() as cursor:
            assert "budget" not in {c.name for c in connection.introspection.get_table_description(
                cursor, "edge_app_edgestatus")}
    finally:
        call_command("migrate", "edge_app", verbosity=0)
    assert WindowAggregate.objects.count() == 30 and WindowAggregate.objects.backlog().count() == 15
    status = EdgeStatus.objects.get(edge_id="edge-1")  # the columns added since, filled in with their defaults
    assert (status.acked, status.budget, status.paused, status.lost_to_retention) == (15, 0, False, 0)
    assert status.windows == 30  # the stored-windows counter starts at what the edge already holds
    with connection.cursor() as cursor:
        for table, names in EDGE_INDEXES.items():
            assert names <= set(connection.introspection.get_constraints(cursor, table)), table
    HouseholdIndexer().index_all()  # what the heartbeat loop does first: the tuples from before, in the index
    assert sorted(HouseholdEntry.objects.filter(household="house-1").values_list("aggregate__window_start", flat=True)) \
        == [T0 + i * 5000 for i in range(1, 30, 3)]


def test_it_stops_its_postgresql_and_removes_its_folder_when_interrupted():
    marker = uuid.uuid4().hex  # the nested session's own, so its processes are told apart from ours
    # This file's edge_db tests: the session starts its PostgreSQL for them as for the whole pass, without first
    # collecting every test file.
    nested = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", OPTION, "postgres",
                               "-m", "edge_db", __file__], cwd=ROOT, env={**os.environ, SESSION_ENV: marker},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def listening_server_folder():
        for cmdline in with_environment(SESSION_ENV, marker).values():
            found = re.search(r"postgres -D (\S+)/[^/\s]+/cluster -p (\d+)", cmdline)
            if found and port_open("127.0.0.1", int(found[2])):
                return Path(found[1])
        return None

    try:
        folder = wait_for(listening_server_folder, timeout=120, interval=0.1)
        assert folder, "the nested session never started its PostgreSQL"
        nested.send_signal(signal.SIGTERM)  # mid-session: making the test database or running a test
        out, _ = nested.communicate(timeout=120)
    finally:
        if nested.poll() is None:
            nested.kill()
            nested.communicate()
        for pid in with_environment(SESSION_ENV, marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert nested.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "outlived it" not in out, out[-3000:]  # stopped by its fixture, not killed as a survivor
    assert not with_environment(SESSION_ENV, marker)
    assert not folder.exists()


def make_test_runs():
    """The pytest runs of `make test`: a line's commands, and those scripts/alongside.sh runs side by side (split at
    `--`), each as (the words before `pytest`, the line's number in the recipe, the run from `pytest` on)."""
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    runs = []
    for number, line in enumerate(recipe.splitlines()):
        command = []
        for word in [*shlex.split(line), "--"]:
            if word != "--":
                command.append(word)
                continue
            starts = [i for i, w in enumerate(command) if w.endswith("bin/pytest")]
            if starts:
                run = command[starts[0]:]
                runs.append((command[:starts[0]], number, run))
            command = []
    return runs, recipe


def test_it_runs_the_edge_database_tests_again_on_postgresql_in_make_test():
    runs, recipe = make_test_runs()
    sqlite = [run for _, _, run in runs if OPTION not in run]
    postgres = [run for _, _, run in runs if OPTION in run]
    assert sorted(run[run.index("-m") + 1] for run in sqlite) == ["not serial", "serial"], recipe  # each test once
    assert len(postgres) == 1 and " ".join(postgres[0]).endswith(f"{OPTION} postgres -m edge_db"), recipe
