"""`bench admin`: the edge's admin pages with N tuples stored, beside the admin before issue 16.

A child process (`manage.py benchchild admin`) gets a database of its own
(a fresh SQLite file, or a fresh database on the local PostgreSQL), fills it
with N tuples through the ingest's own INSERT (one executemany per flush,
one created_at per flush), acknowledges all but a backlog the way the
sender would, logs in with Django's test client and times each page: server
time, the whole request through the middleware, no network. The same child
then times the baseline admin (tooling/bench/admin_baseline.py) on the same
data. `--write` puts the table into a generated section of a Markdown file.

Filling 10 million tuples is most of a run, so `--keep DIR` keeps the
filled database (class Kept) and a later run of the same engine and shape
reuses it instead of filling again; the output and the table say so.
"""

import gc
import json
import os
import re
import time
import uuid
from datetime import datetime, timedelta, UTC
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

from tooling.bench.common import Figure, machine, manage, percentile, remove_sqlite

TARGET_MS = 300
T0 = 1_577_142_000_000  # 2019-12-24, the Gem House sample's days
FLUSH_ROWS = 100_000  # rows per executemany and transaction: one large ingest flush
BACKLOG_SHARE = 0.01  # the newest 1% still PENDING or SENT
DEFAULT_POSTGRES_URL = "postgres://fog@127.0.0.1:5433/fog"
SECTION_BEGIN, SECTION_END = "<!-- bench admin: begin -->", "<!-- bench admin: end -->"
RUN_MARK = re.compile(r"<!-- bench admin run: (\w+) (\d+) -->")


def database_kind(text):
    if text not in ("sqlite", "postgres"):
        raise ValueError(f"expected sqlite or postgres, got {text!r}")
    return text


def pages(newest_day, middle_id):
    """(name, today's admin URL, baseline admin URL or None) per page an operator opens."""
    tuples, day = "edge_app/windowaggregate/", newest_day.isoformat()
    return [
        ("tuple list", f"/admin/{tuples}", f"/baseline-admin/{tuples}"),
        ("filter: status acknowledged", f"/admin/{tuples}?status__exact=2", f"/baseline-admin/{tuples}?status__exact=2"),
        ("filter: status pending", f"/admin/{tuples}?status__exact=0", f"/baseline-admin/{tuples}?status__exact=0"),
        ("filter: day", f"/admin/{tuples}?day={day}",
         f"/baseline-admin/{tuples}?day__year={newest_day.year}&day__month={newest_day.month}"
         f"&day__day={newest_day.day}"),
        ("search: household prefix", f"/admin/{tuples}?q=house-12", f"/baseline-admin/{tuples}?q=house-12"),
        ("filter: one household", f"/admin/{tuples}?household=house-12", None),
        ("tuple change page", f"/admin/{tuples}{middle_id}/change/", f"/baseline-admin/{tuples}{middle_id}/change/"),
        ("edge status list", "/admin/edge_app/edgestatus/", "/baseline-admin/edge_app/edgestatus/"),
        ("edge status page", "/admin/edge_app/edgestatus/1/change/", "/baseline-admin/edge_app/edgestatus/1/change/"),
    ]


# --- the parent's side --------------------------------------------------------


def _postgres_url(given):
    """--postgres-url, else the edge's own PostgreSQL server when FOG_DATABASE_URL names one, else the local one."""
    if given:
        return given
    db = settings.DATABASES["default"]
    if "postgresql" in db["ENGINE"] and db.get("HOST"):
        auth = quote(db["USER"] or "", safe="") + (":" + quote(db["PASSWORD"], safe="") if db.get("PASSWORD") else "")
        return f"postgres://{auth}@{db['HOST']}:{db.get('PORT') or 5432}/{db['NAME']}"
    return DEFAULT_POSTGRES_URL


def run(tuples=1_000_000, households=1000, days=7, requests=20, baseline_requests=3, database="sqlite",
        postgres_url="", keep="", write="", out=print):
    import dj_database_url

    from tooling.localservices import Paths, postgres_for

    shape = {"tuples": tuples, "households": households, "days": days}
    kept = Kept(Path(keep), database, shape) if keep else None
    env, service, started, bench_db = {}, None, False, None
    folder = None
    if database == "postgres":
        url = _postgres_url(postgres_url)
        service = postgres_for(dj_database_url.parse(url), Paths(Path(settings.BASE_DIR), Path(settings.VAR_DIR)))
        if service is None:
            raise RuntimeError(f"--postgres-url {url!r} is not a postgres:// URL with a host")
        started = service.up(out) if service.local else False  # what the bench starts, it stops
        bench_db = service.dbname = kept.postgres_name if kept else f"fog_bench_{uuid.uuid4().hex[:8]}"
        if kept and kept.record and not _exists(service, bench_db):
            out(f"admin: {kept.path} names database {bench_db}, which the server no longer holds; filling it again")
            kept.forget()
        if not (kept and kept.record):
            _drop(service, bench_db)  # a fill an earlier --keep run did not finish
        service.ensure_database()
        env["FOG_DATABASE_URL"] = url.rsplit("/", 1)[0] + "/" + bench_db
    else:
        if kept:
            if not kept.record:
                kept.remove_sqlite()
            sqlite = kept.sqlite
        else:
            import tempfile

            folder = Path(tempfile.mkdtemp(prefix="fog-bench-admin-"))
            sqlite = folder / "edge.sqlite3"
        env["FOG_DATABASE_URL"] = f"sqlite:///{sqlite}"
    reuse = bool(kept and kept.record)
    try:
        out(f"admin: {tuples:,} tuples of {households:,} households over {days} days on {database}; "
            f"{requests} requests a page, {baseline_requests} for the baseline")
        if reuse:
            out(f"admin: reusing the database an earlier run filled in {kept.record['fill_seconds']:,.0f} s on "
                f"{kept.record['filled']} ({kept.where()}; --keep {keep}): no fill this run")
        result = _child({**shape, "requests": requests, "baseline_requests": baseline_requests, "fill": not reuse},
                        env)
        if kept and not reuse:
            kept.remember(result["fill_seconds"])
            out(f"admin: kept the filled database ({kept.where()}) for later runs with --keep {keep}")
    finally:
        if bench_db and not kept:
            _drop(service, bench_db)
        if started:
            service.down(out)
        if folder:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    if reuse:
        result.update(fill_seconds=kept.record["fill_seconds"], filled=kept.record["filled"])
    command = (f"manage.py bench admin --tuples {tuples} --database {database}"
               + (f" --requests {requests}" if requests != 20 else "")
               + (f" --baseline-requests {baseline_requests}" if baseline_requests != 3 else "")
               + (f" --keep {keep}" if keep else "") + (f" --write {write}" if write else ""))
    figures = [_figure(database, tuples, row) for row in result["pages"]]
    if write:
        _write(Path(write), database, tuples, result, figures, command)
        out(f"admin: wrote the {database} {tuples:,} table into {write}")
    return figures


class Kept:
    """--keep DIR: a filled database kept for later runs of the same engine and shape, and the record of its fill.

    The record (DIR/admin-<engine>-<tuples>-<households>-<days>.json) is
    written only after a run that filled it succeeded, so a fill cut short is
    never reused: the next run removes it and fills again. SQLite's file lives
    in DIR; PostgreSQL's database stays on its server under a fixed name.
    """

    def __init__(self, folder, database, shape):
        self.folder, self.database = folder, database
        self.stem = f"admin-{database}-{shape['tuples']}-{shape['households']}-{shape['days']}"
        self.path = folder / f"{self.stem}.json"
        self.sqlite = folder / f"{self.stem}.sqlite3"
        self.postgres_name = "fog_bench_" + self.stem.replace("-", "_")
        folder.mkdir(parents=True, exist_ok=True)
        self.record = json.loads(self.path.read_text()) if self.path.exists() else None

    def where(self):
        return f"database {self.postgres_name}" if self.database == "postgres" else str(self.sqlite)

    def remember(self, fill_seconds):
        self.record = {"fill_seconds": fill_seconds, "filled": f"{datetime.now(UTC):%Y-%m-%d}", "where": self.where()}
        self.path.write_text(json.dumps(self.record) + "\n")

    def forget(self):
        self.path.unlink(missing_ok=True)
        self.record = None

    def remove_sqlite(self):
        remove_sqlite(self.sqlite)


def _child(arguments, env):
    # stderr passes through: the fill reports its progress while it runs.
    proc = manage("benchchild", "admin", json.dumps(arguments), env=env, stdout=-1, text=True)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError("bench admin's child failed (its error is above)")
    return json.loads(stdout.strip().splitlines()[-1])


def _exists(service, name):
    with service._connect("postgres") as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def _drop(service, name):
    from psycopg import sql

    with service._connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _figure(database, tuples, row):
    extra = {"p50 ms": round(row["p50"], 1), "CPU p95 ms": round(row["cpu_p95"], 1), "queries": row["queries"]}
    if row.get("baseline_p95") is not None:
        extra.update({"old admin p50 ms": round(row["baseline_p50"], 1),
                      "old admin p95 ms": round(row["baseline_p95"], 1),
                      "x faster (p95)": round(row["baseline_p95"] / row["p95"], 1)})
    return Figure(f"admin {database} {tuples:,}: {row['page']} p95", row["p95"], "ms", None, f"<= {TARGET_MS} ms",
                  extra)


def _write(path, database, tuples, result, figures, command):
    """Replace this (database, size)'s table in the generated section of `path`, keeping the others."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head, _, rest = text.partition(SECTION_BEGIN)
    section, _, tail = rest.partition(SECTION_END)
    runs = {}
    for block in re.split(r"\n(?=<!-- bench admin run: )", section):
        mark = RUN_MARK.search(block)
        if mark:
            runs[(mark.group(1), int(mark.group(2)))] = block.strip()
    filled = (f"a database an earlier run filled in {result['fill_seconds']:,.0f} s on {result['filled']}, reused"
              if result.get("filled") else f"{result['fill_seconds']:,.0f} s to fill")
    lines = [f"<!-- bench admin run: {database} {tuples} -->",
             f"**{database}, {tuples:,} tuples** ({filled}; measured "
             f"{datetime.now(UTC):%Y-%m-%d}, {machine()}, load average {result['load']} at the end; "
             f"`{command}`)", "",
             "| page | p50 | p95 | CPU p95 | target | queries | old admin p50 | old admin p95 | x faster (p95) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for figure in figures:
        e = figure.extra
        page = figure.name.split(": ", 1)[1].rsplit(" p95", 1)[0]
        before = (f"{e['old admin p50 ms']:,.1f} ms | {e['old admin p95 ms']:,.1f} ms "
                  f"| x{e['x faster (p95)']:,.1f}") if "x faster (p95)" in e else "- | - | -"
        lines.append(f"| {page} | {e['p50 ms']:,.1f} ms | {figure.value:,.1f} ms | {e['CPU p95 ms']:,.1f} ms "
                     f"| {figure.target} | {e['queries']} "
                     f"| {before} |")
    runs[(database, tuples)] = "\n".join(lines)
    body = "\n\n".join(runs[key] for key in sorted(runs))
    section = (f"{SECTION_BEGIN}\n## The admin at millions of tuples (`bench admin`)\n\n"
               "Server time per admin page (Django's test client, p50/p95 over repeated requests) with the tuples "
               "in the edge database (wall time; CPU time of the serving process beside it, since the machine is shared), "
               "beside the admin before issue 16 (`tooling/bench/admin_baseline.py`) on the "
               "same data in the same run. The tuples go in through the ingest's INSERT and are acknowledged as the "
               "sender does; a run with `--keep` may reuse a database an earlier run filled, and then says so. "
               "Generated by each run; `make bench` keeps this section.\n\n"
               f"{body}\n{SECTION_END}")
    path.write_text(head.rstrip("\n") + "\n\n" + section + "\n" + tail.lstrip("\n"))


def keep_section(old_text, new_text):
    """`bench all --write` rewrites the file; the admin runs' section (slow to redo) is carried over."""
    _, found, rest = old_text.partition(SECTION_BEGIN)
    if not found:
        return new_text
    section, _, _ = rest.partition(SECTION_END)
    return new_text.rstrip("\n") + "\n\n" + SECTION_BEGIN + section + SECTION_END + "\n"


# --- the child's side -----------------------------------------------------------


def _fill(tuples, households, days, log):
    """N tuples through the ingest's INSERT, then acknowledged by id range as the sender would; seconds taken.

    Each transaction is one large flush (FLUSH_ROWS): the ingest's statement
    and connection settings (WAL, synchronous=NORMAL on SQLite), one created_at
    per flush, and rows built from per-round values so the time goes to the
    database rather than to Python.
    """
    from django.db import connection, transaction

    from edge_app.ingest import INSERT_WINDOWS, _day
    from edge_app.household_index import HouseholdIndexer
    from edge_app.models import EdgeStatus, HouseholdEntry, LinkChange, Status, WindowAggregate

    table = WindowAggregate._meta.db_table
    rounds = -(-tuples // households)  # windows per household
    step = max(5000, (days * 86_400_000 // rounds) // 5000 * 5000)
    acked_upto, sent_from = int(tuples * (1 - BACKLOG_SHARE)), int(tuples * (1 - BACKLOG_SHARE / 4))
    adapt = connection.ops.adapt_datetimefield_value
    names = [f"house-{h}" for h in range(households)]
    phases = {"insert": 0.0, "acknowledge": 0.0}
    started = time.perf_counter()
    for first in range(0, tuples, FLUSH_ROWS):
        last = min(tuples, first + FLUSH_ROWS)
        closed = datetime.fromtimestamp((T0 + ((last - 1) // households) * step + 7000) / 1000, tz=UTC)
        created = adapt(closed)
        rows = []
        for number in range(first // households, -(-last // households)):  # one round: every household once
            start = T0 + number * step
            end, day = start + 5000, _day(start)
            lo, hi = max(first, number * households), min(last, (number + 1) * households)
            rows.extend((names[i % households], start, end, day, 150.0 + (i % 311) * 1.37, 3 + i % 3, created)
                        for i in range(lo, hi))
        began = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(INSERT_WINDOWS, rows)
            inserted = time.perf_counter()
            # Ids run 1..N in a fresh table: acknowledge this flush up to the backlog, as the sender would.
            sent = closed + timedelta(milliseconds=20)
            acked = sent + timedelta(milliseconds=40 + (first // FLUSH_ROWS) % 7 * 15)
            cursor.execute(f"UPDATE {table} SET status = %s, postal_code = %s, sent_at = %s, acked_at = %s "
                           "WHERE id > %s AND id <= %s",
                           [Status.ACKED, "80331", adapt(sent), adapt(acked), first, min(last, acked_upto)])
            cursor.execute(f"UPDATE {table} SET status = %s, sent_at = %s WHERE id > %s AND id <= %s",
                           [Status.SENT, adapt(sent), max(first, sent_from), last])
        phases["insert"] += inserted - began
        phases["acknowledge"] += time.perf_counter() - inserted
        if last // FLUSH_ROWS % 10 == 0 or last == tuples:
            log(f"admin: filled {last:,} of {tuples:,} tuples in {time.perf_counter() - started:.0f} s "
                f"(INSERT {phases['insert']:.0f} s, acknowledging {phases['acknowledge']:.0f} s)")
    began = time.perf_counter()
    HouseholdIndexer().index_all()  # as the heartbeat loop's runs build it, here in one go
    log(f"admin: the household index took in {tuples:,} tuples in {time.perf_counter() - began:.0f} s")
    if connection.vendor == "postgresql":
        # What autovacuum does after a bulk insert: statistics, and the visibility map index-only scans use.
        began = time.perf_counter()
        with connection.cursor() as cursor:
            for name in (table, HouseholdEntry._meta.db_table):
                cursor.execute(f"VACUUM ANALYZE {name}")
        log(f"admin: VACUUM ANALYZE took {time.perf_counter() - began:.0f} s")
    now = datetime.now(UTC)
    EdgeStatus.objects.update_or_create(edge_id="bench-edge", defaults={
        "connected": True, "since": now - timedelta(minutes=42), "last_heartbeat_at": now, "backlog": tuples - acked_upto,
        "readings": tuples * 3, "sent": tuples, "acked": acked_upto, "late": 12, "malformed": 3})
    for n, up in enumerate([False, True, False, True]):
        LinkChange.record("bench-edge", up, now - timedelta(hours=4 - n), "" if up else "no answer within 800 ms")
    return time.perf_counter() - started


def _time(client, url, count, warm=True):
    """p50 and p95 wall and CPU milliseconds of `count` requests, and the SQL statements one request runs.

    The first, untimed request counts the statements and warms caches; the
    old admin skips it (its pages take seconds each at millions of tuples).
    """
    from django.db import connection

    statements = []
    if warm:
        with connection.execute_wrapper(lambda execute, sql, *rest: statements.append(sql) or execute(sql, *rest)):
            response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
    wall, cpu = [], []
    for _ in range(count):
        began, began_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
    return {"p50": percentile(wall, 0.50), "p95": percentile(wall, 0.95), "cpu_p95": percentile(cpu, 0.95),
            "queries": len(statements)}


def child_admin(tuples, households, days, requests, baseline_requests, fill=True):
    import sys

    from django.contrib.auth.models import User
    from django.test import Client, override_settings

    from edge_app.models import WindowAggregate

    def log(line):
        print(line, file=sys.stderr, flush=True)

    fill_seconds = _fill(tuples, households, days, log) if fill else None
    password = uuid.uuid4().hex
    User.objects.filter(username="bench").delete()  # a kept database holds the last run's user
    # Its password hashed with MD5, as Django advises for tests: PBKDF2's deliberately slow rounds would cost every
    # run twice for a login it does not report. The pages render as for any user with a password.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        User.objects.create_superuser("bench", "bench@example.invalid", password)
        client = Client()
        if not client.login(username="bench", password=password):
            raise RuntimeError("bench admin: its user could not log in")
    newest_day = WindowAggregate.objects.order_by("-day").values_list("day", flat=True)[0]
    # As the web server does once it is set up (fogsite/asgi.py): without it a full collection walks every
    # module and settings object inside whichever request triggers it, a pause the served admin has not.
    gc.freeze()
    rows = []
    # Not setup_test_environment(): its instrumented template rendering would be timed too.
    with override_settings(ROOT_URLCONF="tooling.bench.admin_baseline", ALLOWED_HOSTS=["testserver"]):
        for name, url, baseline_url in pages(newest_day, tuples // 2):
            row = {"page": name, **_time(client, url, requests)}
            if baseline_url:
                before = _time(client, baseline_url, baseline_requests, warm=False)
                row.update(baseline_p50=before["p50"], baseline_p95=before["p95"], baseline_cpu_p95=before["cpu_p95"])
            log(f"admin: {name}: p95 {row['p95']:.1f} ms" + (f", old admin {row['baseline_p95']:.1f} ms"
                                                       if baseline_url else ""))
            rows.append(row)
    return {"pages": rows, "fill_seconds": fill_seconds and round(fill_seconds, 1),
            "load": round(os.getloadavg()[0], 1)}
