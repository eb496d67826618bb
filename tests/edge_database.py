"""The engine under the edge's database tests: SQLite (the default) or a PostgreSQL 15 the session owns.

`make test` runs the whole suite on SQLite, then a second, small pass:
`pytest --edge-database postgres -m edge_db`. The `edge_db` marker selects the tests whose SQL differs
between the engines (bulk inserts with ON CONFLICT and upserts, the sender's status transitions, a
whole `runedge` whose workers write at once, crash recovery, retention deletes, the admin's queries
and plans, migrations, reconcile, the edge's metrics). That pass varies the database only: tests
parametrized over the Kafka client run with the configured one; the first pass covers the other.

With `--edge-database postgres` the session starts Debian's PostgreSQL 15 through the same code as
`make services` (tooling.localservices.Postgres), in a cluster of its own in a temporary folder, on a
free loopback port, with a random password. pytest-django's django_db_modify_db_settings points
Django's default database at it before the test database is made, and each child edge (edge_env)
gets a fresh database on it. A PostgreSQL that cannot be started is an error, never a skip.

The session stops the server and removes its folder at its end, also after Ctrl-C or SIGTERM (which
conftest turns into Ctrl-C). Its processes carry the session's marker (FOG_TEST_SESSION), so should
that teardown never run, the session's exit kills them like any other survivor; the last test
leaves them alone only because this module still owns them then (owned_server_pids).
"""

import contextlib
import secrets
import shutil
import tempfile
from pathlib import Path
from uuid import uuid4

import pytest

from edge_app.processes import child_pids

OPTION = "--edge-database"
ENGINES = ("sqlite", "postgres")
MARKER = "edge_db"
VENDOR = {"sqlite": "sqlite", "postgres": "postgresql"}  # Django's connection.vendor for each engine
USER, DATABASE = "fog", "fog"
# Fixtures through which a test reaches the session's edge database; an edge_db test without one never would.
DATABASE_FIXTURES = {"db", "transactional_db", "admin_client", "admin_user", "django_db_setup", "edge_env",
                     "session_postgres"}

_running = []  # the servers this session started and has not stopped yet


def add_option(parser):
    parser.addoption(OPTION, choices=ENGINES, default="sqlite",
                     help="the edge's database for this run: sqlite (default; each child edge a file of its own) or "
                          "postgres (a PostgreSQL 15 this session starts and stops, under the in-process tests and "
                          f"every child edge); `make test` runs `-m {MARKER}` once more with postgres")


def engine(config):
    return config.getoption(OPTION)


def deselected(config, items):
    """On PostgreSQL: refuse an edge_db test that never touches the database (it would pass without running
    there), and keep the configured Kafka client only (FOG_EDGE_KAFKA_CLIENT). Returns the items to deselect."""
    from django.conf import settings

    if engine(config) != "postgres":
        return []
    blind = [item.nodeid for item in items if item.get_closest_marker(MARKER)
             and not item.get_closest_marker("django_db") and not DATABASE_FIXTURES & set(item.fixturenames)]
    if blind:
        raise pytest.UsageError(f"marked {MARKER} but never opens the edge's database, so it cannot run on "
                                f"PostgreSQL: {', '.join(blind)}")
    client = settings.FOG_EDGE_KAFKA_CLIENT
    return [item for item in items
            if getattr(item, "callspec", None) and item.callspec.params.get("kafka_client", client) != client]


class SessionPostgres:
    """A PostgreSQL 15 of the session's own: started in a temporary folder, stopped and removed by stop()."""

    def __init__(self, base_dir):
        from tooling.localservices import Paths, Postgres
        from tooling.net import free_port

        # Started as root, the server runs as the postgres user, which cannot enter pytest's private tmp folders.
        self.var = Path(tempfile.mkdtemp(prefix="fog-test-postgres-"))
        self.var.chmod(0o755)
        self.password = secrets.token_urlsafe(16)
        self.server = Postgres(Paths(Path(base_dir), self.var), "127.0.0.1", free_port(), USER, self.password,
                               DATABASE)

    def start(self):
        _running.append(self)
        try:
            self.server.up(lambda line: None)
        except BaseException:  # an interrupt while it starts, too: nothing is left behind
            self.stop()
            raise
        return self

    def stop(self):
        try:
            self.server.down(lambda line: None)
        finally:
            shutil.rmtree(self.var, ignore_errors=True)
            if self in _running:
                _running.remove(self)

    def url(self, name=DATABASE):
        return f"postgres://{USER}:{self.password}@{self.server.host}:{self.server.port}/{name}"

    def new_database(self, template=None):
        """The URL of a fresh, empty database on this server, or of a copy of the database `template` (which
        nobody may be connected to)."""
        from psycopg import sql

        name = f"edge_{uuid4().hex[:12]}"
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.server._connect("postgres") as conn:
            conn.execute(create)  # waits a few seconds itself for a backend of the template's last client to end
        return self.url(name)


def owned_server_pids():
    """The pids of the servers this module still owns (each postmaster and its backends)."""
    pids = set()
    for session_server in _running:
        pid = session_server.server.our_pid()
        if pid:
            pids |= {pid, *child_pids(pid)}
    return pids


def point_default_database_at(url):
    """Django's default database -> `url` (parsed as settings.py does), before anything has connected."""
    import dj_database_url
    from django.conf import settings
    from django.db import connections

    # Defining the models made the old engine's wrapper (for its name limits), unconnected; drop it.
    if connections["default"].connection is not None:
        raise RuntimeError("the default database was connected to before the test database was configured")
    del connections["default"]
    settings.DATABASES["default"] = dj_database_url.parse(url, conn_max_age=600)
    connections.configure_settings(settings.DATABASES)  # Django's defaults for the new entry


def child_database_url(session_server, tmp_path, template=None):
    """A child edge's own database: a SQLite file in the test's folder, or a fresh database on the session's server;
    with `template` (the URL of another such database), a copy of that one."""
    if session_server:
        return session_server.new_database(template and _name(template))
    path = tmp_path / "edge.sqlite3"
    if template:
        import sqlite3

        # SQLite's backup, not a file copy: what the template's writer left in its write-ahead log comes too.
        with contextlib.closing(sqlite3.connect(_name(template))) as source, \
                contextlib.closing(sqlite3.connect(path)) as copy:
            source.backup(copy)
    return f"sqlite:///{path}"


def _name(url):
    """The database a URL names, as settings.py reads it: a SQLite file's path, or a PostgreSQL database's name."""
    import dj_database_url

    return dj_database_url.parse(url)["NAME"]


def connect_read_only(url):
    """A read-only DB-API connection to a child edge's database (`with` it; rows come back as tuples)."""
    import dj_database_url

    database = dj_database_url.parse(url)
    if database["ENGINE"].endswith("sqlite3"):
        import sqlite3

        return sqlite3.connect(f"file:{database['NAME']}?mode=ro", uri=True, timeout=30)
    import psycopg

    connection = psycopg.connect(url, connect_timeout=10)
    connection.read_only = True
    return connection
