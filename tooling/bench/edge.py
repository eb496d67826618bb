"""`bench drain` and `bench ingest`: the edge's two hot paths, each beside a baseline from the same run.

`bench ingest` times both Kafka clients of the edge on the same readings
(the faster is the figure, the other its baseline: they differ in exactly
the client); with `--client` one client runs beside the naive baseline.
`--profile` adds an untimed pyinstrument run per client and puts the shares
of Kafka polling, parsing, the window book and storing into the figure.

The measured work runs in a child process (`manage.py benchchild`) with a
database file of its own, so a benchmark never touches the user's edge
database; the cloud is a real `runcloud` process. `drain` runs twice per
size in the same run, plain tcp and then tls+tcp (certificates from
fogsite.certs), and reports the TLS rate with the plain one as its
baseline: the two runs differ only in TLS.
"""

import json
import shutil
import tempfile
import time
import uuid

from django.conf import settings
from django.db import connection, transaction

from tooling.bench.common import Figure, delete_prefix, free_port, manage, peak_rss_mib, stop, wait_until
from tooling.localservices import port_open

EDGE, SECRET = "bench-edge", "bench-secret-not-for-production"
T0 = 1_577_142_000_000
INGEST_CLIENTS = ["confluent", "kafka-python"]  # edge_app.kafka_source.SOURCES, in a fixed order
INGEST_ROUNDS = 2


def _child(kind, args, extra_env=None):
    folder = tempfile.mkdtemp(prefix="fog-bench-")
    env = {"FOG_DATABASE_URL": f"sqlite:///{folder}/edge.sqlite3", "FOG_EDGE_ID": EDGE, "FOG_EDGE_SECRET": SECRET,
           **(extra_env or {})}
    try:
        proc = manage("benchchild", kind, json.dumps(args), env=env, stdout=-1, stderr=-1, text=True)
        out, err = proc.communicate(timeout=1800)
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
    wait_until(lambda: port_open("127.0.0.1", data), 30, "runcloud")
    return proc, prefix, hb, data


def run_drain(tuples=100_000, batch=1000, in_flight=4, baseline_tuples=1000, out=print):
    figures = []
    sizes = tuples if isinstance(tuples, list) else [tuples]
    tls_folder = tempfile.mkdtemp(prefix="fog-bench-tls-")
    try:
        tls_env = _tls_env(tls_folder)
        for size in sizes:
            out(f"drain: {size:,} PENDING tuples, batches of {batch}, {in_flight} in flight; "
                f"baseline {baseline_tuples:,} tuples one request + one commit each; then the same over TLS")
            plain = _drain_once(size, batch, in_flight, baseline_tuples, None)
            figures.append(Figure(f"drain {size:,}", plain["rate"], "tuples/s", plain["baseline_rate"],
                                  ">= 50,000 tuples/s", plain["extra"]))
            tls = _drain_once(size, batch, in_flight, 0, tls_env)
            figures.append(Figure(f"drain {size:,} over TLS", tls["rate"], "tuples/s", plain["rate"],
                                  "reported beside plain (baseline: the plain run above)", tls["extra"]))
    finally:
        shutil.rmtree(tls_folder, ignore_errors=True)
    return figures


def _drain_once(size, batch, in_flight, baseline_tuples, tls_env):
    cloud, prefix, hb, data = _cloud(in_flight, tls_env)
    try:
        result = _child("drain", {"tuples": size, "batch": batch, "in_flight": in_flight,
                                  "baseline_tuples": baseline_tuples, "data_port": data}, tls_env)
        result["extra"] = {"seconds": result["seconds"], "edge peak RSS MiB": result["rss_mib"],
                           "cloud peak RSS MiB": round(peak_rss_mib(cloud.pid) or 0, 1),
                           "us/tuple": round(1e6 / result["rate"], 1)}
        return result
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
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.FOG_KAFKA_BOOTSTRAP, client_id="fog-bench")
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    try:
        out(f"ingest: producing {readings:,} readings of {households:,} households to {topic}")
        producer = KafkaProducer(bootstrap_servers=settings.FOG_KAFKA_BOOTSTRAP, linger_ms=20,
                                 batch_size=1024 * 1024, acks="all")
        for i in range(readings):
            h = i % households
            ts = T0 + (i // households) * 2000
            producer.send(topic, key=b"h%d" % h,
                          value=b'{"household":"h%d","ts":%d,"power_w":%.2f}' % (h, ts, 100 + h % 50 + (i % 7) * 0.3))
        producer.flush()
        producer.close()
        if len(clients) > 1:
            out(f"ingest: consuming into closed windows with {' and '.join(clients)}, {INGEST_ROUNDS} rounds each "
                "in alternating order (the best round of each counts)")
        else:
            out(f"ingest: consuming into closed windows with {clients[0]}; baseline {baseline_readings:,} readings "
                "one at a time, a commit per window")
        result = _child("ingest", {"topic": topic, "clients": clients, "profile": profile,
                                   "baseline_readings": 0 if len(clients) > 1 else baseline_readings})
    finally:
        admin.delete_topics([topic])
        admin.close()
    runs = result["runs"]
    for name, run in runs.items():
        if run.get("profile_text"):
            out(f"ingest: pyinstrument profile of {name} (a separate, untimed run):\n{run.pop('profile_text')}")
    ranked = sorted(runs, key=lambda name: runs[name]["rate"], reverse=True)
    best = runs[ranked[0]]
    extra = {"client": ranked[0], "windows": best["windows"], "seconds": best["seconds"],
             "edge peak RSS MiB": result["rss_mib"], **best.get("shares", {})}
    if len(ranked) > 1:
        extra["baseline is"] = f"{ranked[1]} client, same readings"
        baseline = runs[ranked[1]]["rate"]
    else:
        extra["baseline is"] = "one reading at a time, a commit per window"
        baseline = result["baseline_rate"]
    return [Figure("ingest", best["rate"], "readings/s", baseline, ">= 50,000 readings/s", extra)]


# --- the child's side -------------------------------------------------------


def _seed(count, first=0):
    from edge_app.models import WindowAggregate

    for start in range(first, first + count, 20000):
        WindowAggregate.objects.bulk_create([
            WindowAggregate(household=f"house-{i % 1000}", window_start=T0 + (i // 1000) * 5000,
                            window_end=T0 + (i // 1000) * 5000 + 5000, day="2019-12-24",
                            average_w=100.0 + i % 97, readings=3)
            for i in range(start, min(first + count, start + 20000))], batch_size=5000)


def child_drain(tuples, batch, in_flight, baseline_tuples, data_port):
    import pynng

    from edge_app.models import EdgeStatus, Status, WindowAggregate
    from edge_app.sender import Sender
    from fogwire import protocol as wire

    from edge_app.loops import cloud_tls
    from fogwire.tls import address

    _seed(tuples)
    EdgeStatus.objects.update_or_create(edge_id=EDGE, defaults={"connected": True})
    tls = cloud_tls()  # from FOG_TLS_CA, set only for the TLS run
    sender = Sender(edge_id=EDGE, secret=SECRET, address=address("127.0.0.1", data_port, tls), batch=batch,
                    in_flight=in_flight, tls=tls)
    time.sleep(0.3)  # let the socket dial
    started = time.perf_counter()
    while sender.handle_one_round():
        pass
    seconds = time.perf_counter() - started
    acked = WindowAggregate.objects.filter(status=Status.ACKED).count()
    if acked != tuples:
        raise RuntimeError(f"drain acknowledged {acked} of {tuples} tuples")
    sender.close()
    if not baseline_tuples:
        return {"rate": tuples / seconds, "seconds": round(seconds, 2), "baseline_rate": None,
                "rss_mib": round(peak_rss_mib("self") or 0, 1)}

    # Baseline, the original prototype's pattern: one tuple, one request, one commit.
    _seed(baseline_tuples, first=tuples)
    table = WindowAggregate._meta.db_table
    with pynng.Req0(dial=f"tcp://127.0.0.1:{data_port}", recv_timeout=5000) as sock:
        started = time.perf_counter()
        for row in WindowAggregate.objects.filter(status=Status.PENDING).values_list(
                "id", "household", "window_start", "window_end", "average_w", "readings"):
            request = wire.batch_frame(EDGE, SECRET, [row])
            sock.send(request)
            codes, _ = wire.read_reply(sock.recv(), request, SECRET, 1)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"UPDATE {table} SET status = 2, postal_code = %s WHERE id = %s", [codes[0], row[0]])
        base_seconds = time.perf_counter() - started
    return {"rate": tuples / seconds, "seconds": round(seconds, 2), "baseline_rate": baseline_tuples / base_seconds,
            "rss_mib": round(peak_rss_mib("self") or 0, 1)}


def _ingest_once(topic, client, profiler=None):
    """One client's timed burst over the whole topic into a cleared edge database."""
    from edge_app.ingest import Ingestor
    from edge_app.models import IngestPosition, WindowAggregate

    WindowAggregate.objects.all().delete()
    IngestPosition.objects.all().delete()
    ingest = Ingestor(edge_id=EDGE, topic=topic, bootstrap=settings.FOG_KAFKA_BOOTSTRAP,
                      window_seconds=settings.FOG_WINDOW_SECONDS, grace_seconds=settings.FOG_GRACE_SECONDS,
                      idle_seconds=60, client=client)
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
                 "parse %": ("edge_app/ingest.py", "parse_reading"),
                 "windows %": ("edge_app/windows.py", "add"),
                 "store %": ("edge_app/ingest.py", "flush")}


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


def child_ingest(topic, clients, baseline_readings, profile=False):
    from edge_app.ingest import parse_reading
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
    if not baseline_readings:
        return result

    # Baseline: message by message, each closed window in a transaction of its own.
    WindowAggregate.objects.all().delete()
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.FOG_KAFKA_BOOTSTRAP, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    book = WindowBook(settings.FOG_WINDOW_SECONDS * 1000, int(settings.FOG_GRACE_SECONDS * 1000), 60)
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
