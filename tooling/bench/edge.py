"""`bench drain` and `bench ingest`: the edge's two hot paths, each beside a baseline from the same run.

`bench ingest` times both Kafka clients of the edge on the same readings
(the faster is the figure, the other its baseline: they differ in exactly
the client); with `--client` one client runs beside the naive baseline.
`--profile` adds an untimed pyinstrument run per client and puts the shares
of Kafka polling, parsing, the window book and storing into the figure. The
same readings also go in batches (the simulation's default) to a second
topic: its figure differs from the first in the packing alone.

The measured work runs in a child process (`manage.py benchchild`) with a
database file of its own, so a benchmark never touches the user's edge
database; the cloud is a real `runcloud` process. `drain` also runs the
shipped sender over tls+tcp (certificates from fogsite.certs) beside the same
drain in clear: the two runs differ only in TLS.
"""

import json
import shutil
import tempfile
import time
import uuid

import orjson
from django.conf import settings

from fogwire.limits import MAX_MESSAGE_BYTES, MAX_READINGS_PER_MESSAGE, READINGS_FIELD
from tooling.bench.common import Figure, delete_prefix, manage, peak_rss_mib, stop
from tooling.net import free_port, port_open, wait_for

EDGE, SECRET = "bench-edge", "bench-secret-not-for-production"
T0 = 1_577_142_000_000
INGEST_CLIENTS = ["confluent", "kafka-python"]  # edge_app.kafka_source.SOURCES, in a fixed order
INGEST_ROUNDS = 2
INGEST_PARTITIONS = 4


def _child(kind, args, extra_env=None):
    folder = tempfile.mkdtemp(prefix="fog-bench-")
    env = {"FOG_DATABASE_URL": f"sqlite:///{folder}/edge.sqlite3", "FOG_EDGE_ID": EDGE, "FOG_EDGE_SECRET": SECRET,
           **(extra_env or {})}
    try:
        proc = manage("benchchild", kind, json.dumps(args), env=env, stdout=-1, stderr=-1, text=True)
        try:
            out, err = proc.communicate(timeout=1800)
        finally:  # a child past its time, or a benchmark interrupted, leaves nothing running
            stop(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark child failed:\n{err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tls_env(folder):
    """Cloud and edge settings for TLS on loopback, with a fresh development CA in `folder`."""
    from fogsite.certs import write_set

    write_set(folder, ["127.0.0.1"], [])
    return {"FOG_CLOUD_TLS_CERT": f"{folder}/cloud.pem", "FOG_TLS_CA": f"{folder}/ca.pem",
            "FOG_TLS_SERVER_NAME": "127.0.0.1"}


def _cloud(in_flight, tls_env=None):
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    hb, data = free_port(), free_port()
    proc = manage("runcloud", "--heartbeat-port", str(hb), "--data-port", str(data), "--workers", str(in_flight * 2),
                  "-v", "0", env={"FOG_CLOUD_KEY_PREFIX": prefix, "FOG_EDGE_SECRETS": f"{EDGE}:{SECRET}",
                                  **(tls_env or {})})
    wait_for(lambda: port_open("127.0.0.1", data), 30, "runcloud")
    return proc, prefix, hb, data


def run_drain(tuples=100_000, batch=1000, in_flight=4, baseline_tuples=1000, orm_tuples=10_000, out=print):
    figures = []
    sizes = tuples if isinstance(tuples, list) else [tuples]
    tls_folder = tempfile.mkdtemp(prefix="fog-bench-tls-")
    try:
        tls_env = _tls_env(tls_folder)
        for size in sizes:
            orm_size = min(size, orm_tuples)
            out(f"drain: {size:,} PENDING tuples, batches of {batch}, {in_flight} in flight; {orm_size:,} marked "
                f"ACKED by the shipped UPDATE, then by the ORM; the same batches with 1 in flight; then "
                f"{baseline_tuples:,} tuples one a request, 1 in flight; then the first drain over TLS")
            result, cloud_rss = _drain_once({"tuples": size, "batch": batch, "in_flight": in_flight,
                                             "baseline_tuples": baseline_tuples, "orm_tuples": orm_size}, None)
            figures.append(Figure(f"drain {size:,}, {in_flight} in flight", result["rate"], "tuples/s",
                                  result["one_in_flight_rate"], ">= 50,000 tuples/s",
                                  {"seconds": result["seconds"], "edge peak RSS MiB": result["rss_mib"],
                                   "cloud peak RSS MiB": cloud_rss,
                                   "against": f"the same batches of {batch}, 1 in flight"}))
            figures.append(Figure(f"drain {orm_size:,}, one UPDATE over all ACKs", result["orm_shipped_rate"],
                                  "tuples/s", result["orm_rate"], "",
                                  {"against": "an ORM update a row, all else the same"}))
            figures.append(Figure(f"drain {orm_size:,}, one UPDATE ... RETURNING claims a batch",
                                  result["orm_shipped_rate"], "tuples/s", result["orm_claim_rate"], "",
                                  {"against": "the ORM's SELECT, then UPDATE of the same rows, all else the same"}))
            figures.append(Figure(f"drain {size:,}, batches of {batch}", result["one_in_flight_rate"], "tuples/s",
                                  result["unbatched_rate"], "", {"against": "one tuple a request, 1 in flight"}))
            tls, _ = _drain_once({"tuples": size, "batch": batch, "in_flight": in_flight, "baseline_tuples": 0,
                                  "orm_tuples": 0}, tls_env)
            figures.append(Figure(f"drain {size:,} over TLS", tls["rate"], "tuples/s", result["rate"],
                                  "reported beside plain", {"against": "the same drain in clear (tcp)"}))
    finally:
        shutil.rmtree(tls_folder, ignore_errors=True)
    return figures


def _drain_once(args, tls_env):
    """One child run against a fresh runcloud; (its result, the cloud's peak RSS in MiB)."""
    cloud, prefix, hb, data = _cloud(args["in_flight"], tls_env)
    try:
        return _child("drain", {**args, "data_port": data}, tls_env), round(peak_rss_mib(cloud.pid) or 0, 1)
    finally:
        stop(cloud)
        delete_prefix(settings.FOG_CLOUD_REDIS_URL, prefix)


def run_ingest(readings=500_000, households=1000, baseline_readings=20_000, client="both", profile=False,
               out=print):
    """Both clients on the same readings (the faster is the figure, the other its baseline), or one
    client beside the naive one-at-a-time baseline."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    clients = INGEST_CLIENTS if client == "both" else [client]
    baseline_readings = min(baseline_readings, readings)  # the baseline reads the same topic, no further
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.FOG_KAFKA_BOOTSTRAP, client_id="fog-bench")
    batched = f"{topic}-batched"
    admin.create_topics([NewTopic(name, num_partitions=INGEST_PARTITIONS, replication_factor=1)
                         for name in (topic, batched)])
    try:
        out(f"ingest: producing {readings:,} readings of {households:,} households to {topic}, and the same "
            f"readings in batches of {MAX_READINGS_PER_MESSAGE} to {batched}")
        producer = KafkaProducer(bootstrap_servers=settings.FOG_KAFKA_BOOTSTRAP, linger_ms=20,
                                 batch_size=1024 * 1024, acks="all", max_request_size=2 * MAX_MESSAGE_BYTES)
        batches = [[] for _ in range(INGEST_PARTITIONS)]  # a household's readings in one partition, in order
        for i in range(readings):
            h = i % households
            ts = T0 + (i // households) * 2000
            power = round(100 + h % 50 + (i % 7) * 0.3, 2)
            producer.send(topic, key=b"h%d" % h, value=b'{"household":"h%d","ts":%d,"power_w":%r}' % (h, ts, power),
                          partition=h % INGEST_PARTITIONS)  # as its batches below: the packing is the one difference
            batch = batches[h % INGEST_PARTITIONS]
            batch.append((f"h{h}", ts, power))
            if len(batch) == MAX_READINGS_PER_MESSAGE:
                producer.send(batched, orjson.dumps({READINGS_FIELD: batch}), partition=h % INGEST_PARTITIONS)
                batch.clear()
        for partition, batch in enumerate(batches):
            if batch:
                producer.send(batched, orjson.dumps({READINGS_FIELD: batch}), partition=partition)
        producer.flush()
        producer.close()
        if len(clients) > 1:
            out(f"ingest: consuming into closed windows with {' and '.join(clients)}, {INGEST_ROUNDS} rounds each "
                "in alternating order (the best round of each counts)")
        else:
            out(f"ingest: consuming into closed windows with {clients[0]}; baseline {baseline_readings:,} readings "
                "one at a time, a commit per window")
        result = _child("ingest", {"topic": topic, "batched_topic": batched, "clients": clients, "profile": profile,
                                   "baseline_readings": 0 if len(clients) > 1 else baseline_readings})
    finally:
        admin.delete_topics([topic, batched])
        admin.close()
    runs = result["runs"]
    profiles = []
    for name, run in runs.items():
        if run.get("profile_text"):
            text = f"pyinstrument, the {name} client (a separate, untimed run):\n{run.pop('profile_text')}"
            out(f"ingest: {text}")
            profiles.append(text)
    ranked = sorted(runs, key=lambda name: runs[name]["rate"], reverse=True)
    best = runs[ranked[0]]
    extra = {"client": ranked[0], "windows": best["windows"], "seconds": best["seconds"],
             "edge peak RSS MiB": result["rss_mib"], **best.get("shares", {})}
    if len(ranked) > 1:
        extra["against"] = f"the {ranked[1]} client, same readings"
        baseline = runs[ranked[1]]["rate"]
    else:
        extra["against"] = "one reading at a time, a commit per window"
        baseline = result["baseline_rate"]
    return [Figure("ingest", best["rate"], "readings/s", baseline, ">= 50,000 readings/s", extra,
                   profile="\n\n".join(profiles)),
            Figure("ingest, one INSERT over all rows", best["rate"], "readings/s", result["orm"]["rate"],
                   ">= 50,000 readings/s", {"client": ranked[0], "against": "the ORM's bulk_create, same consumer"}),
            Figure("ingest, readings parsed by orjson", best["rate"], "readings/s", result["stdlib_json"]["rate"],
                   ">= 50,000 readings/s", {"client": ranked[0], "against": "the standard library's json, same consumer"}),
            Figure(f"ingest, batches of {MAX_READINGS_PER_MESSAGE} readings a message", result["batched"]["rate"],
                   "readings/s", best["rate"], ">= 50,000 readings/s",
                   {"client": ranked[0], "seconds": result["batched"]["seconds"],
                    "against": "the same readings one a message, same consumer"})]


# --- the child's side -------------------------------------------------------


def _seed(count, first=0):
    from edge_app.models import WindowAggregate

    for start in range(first, first + count, 20000):
        WindowAggregate.objects.bulk_create([
            WindowAggregate(household=f"house-{i % 1000}", window_start=T0 + (i // 1000) * 5000,
                            window_end=T0 + (i // 1000) * 5000 + 5000, day="2019-12-24",
                            average_w=100.0 + i % 97, readings=3)
            for i in range(start, min(first + count, start + 20000))], batch_size=5000)


def _drain_pass(count, batch, in_flight, data_port, sender_class=None):
    """Seed `count` new PENDING tuples and run the Sender (or `sender_class`) until all are ACKED; seconds taken."""
    from edge_app.loops import cloud_tls
    from edge_app.models import Status, WindowAggregate
    from edge_app.sender import Sender
    from fogwire.tls import address

    sender_class = sender_class or Sender
    tls = cloud_tls()  # from FOG_TLS_CA, set only for the TLS run

    first = WindowAggregate.objects.count()
    _seed(count, first=first)
    sender = sender_class(edge_id=EDGE, secret=SECRET, address=address("127.0.0.1", data_port, tls), batch=batch,
                          in_flight=in_flight, tls=tls)
    time.sleep(0.3)  # let the socket dial
    started = time.perf_counter()
    while sender.handle_one_round():
        pass
    seconds = time.perf_counter() - started
    sender.close()
    acked = WindowAggregate.objects.filter(status=Status.ACKED).count() - first
    if acked != count:
        raise RuntimeError(f"drain acknowledged {acked} of {count} tuples")
    return seconds


def child_drain(tuples, batch, in_flight, baseline_tuples, orm_tuples, data_port):
    """The Sender as shipped; the same with the ORM's bulk_update marking ACKs; the same batches with one in
    flight; then one tuple a request, one in flight."""
    from django.utils import timezone

    from edge_app.models import EdgeStatus, Status, WindowAggregate
    from edge_app.sender import Sender

    class OrmAck(Sender):
        def mark_acked(self, acked):  # each row has its own code: one ORM update a row
            now, first = timezone.now(), 0
            for code, _, tid in acked:
                fields = {"status": Status.ACKED, "postal_code": code, "acked_at": now, "refusal": "",
                          "next_attempt_at": None}
                marked = WindowAggregate.objects.filter(id=tid, acked_at__isnull=True).update(**fields)
                if not marked:  # sent again from the admin: acknowledged again, counted once (Sender.mark_acked)
                    WindowAggregate.objects.filter(id=tid).update(**fields)
                first += marked
            return first

    class OrmClaim(Sender):
        def _next_batch(self):  # the ORM's SELECT of the next batch, then its UPDATE of those rows to SENT
            return self.claim_with_orm()

    EdgeStatus.objects.update_or_create(edge_id=EDGE, defaults={"connected": True})
    shipped = _drain_pass(tuples, batch, in_flight, data_port)
    if not orm_tuples:  # the TLS run: the shipped drain alone
        return {"rate": tuples / shipped, "seconds": round(shipped, 2), "rss_mib": round(peak_rss_mib("self") or 0, 1)}
    orm_shipped = _drain_pass(orm_tuples, batch, in_flight, data_port)  # the same size as the ORM's pass
    orm = _drain_pass(orm_tuples, batch, in_flight, data_port, OrmAck)
    orm_claim = _drain_pass(orm_tuples, batch, in_flight, data_port, OrmClaim)
    one_in_flight = _drain_pass(tuples, batch, 1, data_port)
    unbatched = _drain_pass(baseline_tuples, 1, 1, data_port)
    return {"rate": tuples / shipped, "seconds": round(shipped, 2), "orm_shipped_rate": orm_tuples / orm_shipped,
            "orm_rate": orm_tuples / orm, "orm_claim_rate": orm_tuples / orm_claim,
            "one_in_flight_rate": tuples / one_in_flight, "unbatched_rate": baseline_tuples / unbatched,
            "rss_mib": round(peak_rss_mib("self") or 0, 1)}


def _ingest_once(topic, client, profiler=None, ingestor_class=None, parser=None):
    """One client's timed burst over the whole topic into a cleared edge database (with `parser`: that
    function parses each reading's JSON instead of the edge's own)."""
    from edge_app import readings as readings_module
    from edge_app.ingest import Ingestor

    shipped_parser = readings_module.loads
    if parser is not None:
        readings_module.loads = parser
    try:
        return _timed_ingest(topic, client, profiler, ingestor_class or Ingestor)
    finally:
        readings_module.loads = shipped_parser


def _timed_ingest(topic, client, profiler, ingestor_class):
    from edge_app.models import IngestPosition, WindowAggregate

    WindowAggregate.objects.all().delete()
    IngestPosition.objects.all().delete()
    ingest = ingestor_class(edge_id=EDGE, topic=topic, bootstrap=settings.FOG_KAFKA_BOOTSTRAP,
                      window_seconds=settings.FOG_WINDOW_SECONDS, grace_seconds=settings.FOG_GRACE_SECONDS,
                      idle_seconds=60, client=client, stagger=settings.FOG_WINDOW_STAGGER)
    ingest.connect()
    end = ingest.end_offsets()
    if profiler:
        profiler.start()
    started = time.perf_counter()
    while not ingest.at_end(end):
        ingest.handle_one_poll()
    ingest.finish()
    seconds = time.perf_counter() - started
    if profiler:
        profiler.stop()
    ingest.close()
    return {"rate": ingest.totals["readings"] / seconds, "seconds": round(seconds, 2),
            "windows": WindowAggregate.objects.count()}


# Where an ingest's time goes, by the topmost frame of each of these functions (module suffix, name).
PROFILE_PARTS = {"kafka poll %": ("edge_app/kafka_source.py", "poll"),
                 "parse %": ("edge_app/readings.py", "parse_message"),
                 "windows %": ("edge_app/windows.py", "add"),
                 "store %": ("edge_app/ingest.py", "store_closed")}


def _shares(root):
    """{part: percent of the run} from a pyinstrument frame tree."""
    totals = dict.fromkeys(PROFILE_PARTS, 0.0)

    def walk(frame):
        for part, (suffix, function) in PROFILE_PARTS.items():
            if frame.function == function and (frame.file_path or "").endswith(suffix):
                totals[part] += frame.time
                return
        for child in frame.children:
            walk(child)

    walk(root)
    return {part: round(100 * value / root.time, 1) for part, value in totals.items()}


def _orm_ingestor():
    from edge_app.ingest import Ingestor
    from edge_app.models import WindowAggregate

    class OrmInsert(Ingestor):
        def insert_windows(self, rows):
            fields = ("household", "window_start", "window_end", "day", "average_w", "readings", "created_at")
            WindowAggregate.objects.bulk_create([WindowAggregate(**dict(zip(fields, row))) for row in rows],
                                                ignore_conflicts=True)
            return len(rows)  # the stored-windows counter is updated as in the figure (replays aside)

    return OrmInsert


def child_ingest(topic, batched_topic, clients, baseline_readings, profile=False):
    from edge_app.readings import parse_reading
    from edge_app.models import IngestPosition, WindowAggregate
    from edge_app.windows import WindowBook

    runs = {}
    # Alternating order (A B B A ...) so neither client always gets the colder broker cache.
    order = [c for round_ in range(INGEST_ROUNDS) for c in (clients if round_ % 2 == 0 else clients[::-1])]
    for client in order:
        run = _ingest_once(topic, client)
        if client not in runs or run["rate"] > runs[client]["rate"]:
            runs[client] = run
    if profile:
        from pyinstrument import Profiler

        for client in clients:
            profiler = Profiler(interval=0.0005)
            _ingest_once(topic, client, profiler)
            runs[client]["shares"] = _shares(profiler.last_session.root_frame())
            runs[client]["profile_text"] = profiler.output_text(color=False, show_all=False)
    result = {"runs": runs, "rss_mib": round(peak_rss_mib("self") or 0, 1)}
    # The second baseline differs in one thing only: the ORM's bulk_create in place of the one prepared INSERT.
    fastest = max(runs, key=lambda name: runs[name]["rate"])
    result["orm"] = _ingest_once(topic, fastest, ingestor_class=_orm_ingestor())
    if result["orm"]["windows"] != runs[fastest]["windows"]:
        raise RuntimeError(f"the ORM pass stored {result['orm']['windows']} windows, not {runs[fastest]['windows']}")
    # This one differs in how the readings are packed only: the same readings, in batches (simulation's default).
    result["batched"] = max((_ingest_once(batched_topic, fastest) for _ in range(INGEST_ROUNDS)),
                            key=lambda run: run["rate"])
    if result["batched"]["windows"] != runs[fastest]["windows"]:
        raise RuntimeError(f"the batched pass stored {result['batched']['windows']} windows, not "
                           f"{runs[fastest]['windows']}")
    # The third differs in the JSON parser only: the standard library's json in place of orjson, its best of
    # as many rounds as the figure's.
    result["stdlib_json"] = max((_ingest_once(topic, fastest, parser=json.loads) for _ in range(INGEST_ROUNDS)),
                                key=lambda run: run["rate"])
    if not baseline_readings:
        return result

    from django.db import transaction
    from kafka import KafkaConsumer

    # Into an empty table, as every timed pass: the windows the passes above stored are the same ones.
    WindowAggregate.objects.all().delete()
    IngestPosition.objects.all().delete()

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.FOG_KAFKA_BOOTSTRAP, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    book = WindowBook(settings.FOG_WINDOW_SECONDS * 1000, int(settings.FOG_GRACE_SECONDS * 1000), 60,
                      stagger=settings.FOG_WINDOW_STAGGER)
    started = time.perf_counter()
    for count, message in enumerate(consumer, start=1):
        household, ts, power = parse_reading(message.value, int(time.time() * 1000))
        book.add(household, ts, power, message.partition, message.offset, time.monotonic())
        for window in book.take_closed():
            with transaction.atomic():
                WindowAggregate.objects.create(household=window.household, window_start=window.start,
                                               window_end=window.end, day="2019-12-24", average_w=window.average,
                                               readings=window.count)
                IngestPosition.objects.update_or_create(
                    edge_id=EDGE, topic=topic, partition=message.partition,
                    defaults={"resume_offset": message.offset, "counted_offset": message.offset + 1})
        if count >= baseline_readings:
            break
    base_seconds = time.perf_counter() - started
    consumer.close()
    return {**result, "baseline_rate": baseline_readings / base_seconds}
