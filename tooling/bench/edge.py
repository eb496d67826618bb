"""`bench drain` and `bench ingest`: the edge's two hot paths, each beside its naive baseline.

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

from django.conf import settings

from tooling.bench.common import Figure, delete_prefix, manage, peak_rss_mib, stop
from tooling.net import free_port, port_open, wait_for

EDGE, SECRET = "bench-edge", "bench-secret-not-for-production"
T0 = 1_577_142_000_000


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


def run_ingest(readings=500_000, households=1000, profile=False, out=print):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

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
        out("ingest: consuming into closed windows as shipped, then with kafka-python's default consumer "
            "settings, then with the ORM's bulk_create")
        result = _child("ingest", {"topic": topic, "profile": profile})
    finally:
        admin.delete_topics([topic])
        admin.close()
    shipped = result["shipped"]
    details = {"windows": shipped["windows"], "seconds": shipped["seconds"], "edge peak RSS MiB": result["rss_mib"]}
    return [Figure("ingest, tuned consumer", shipped["rate"], "readings/s", result["untuned"]["rate"],
                   ">= 50,000 readings/s", {**details, "against": "kafka-python's default consumer settings"},
                   profile=result["profile"]),
            Figure("ingest, one INSERT over all rows", shipped["rate"], "readings/s", result["orm"]["rate"],
                   ">= 50,000 readings/s", {"against": "the ORM's bulk_create, same consumer"})]


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
            now = timezone.now()
            for code, _, tid in acked:
                WindowAggregate.objects.filter(id=tid).update(status=Status.ACKED, postal_code=code, acked_at=now,
                                                              refusal="", next_attempt_at=None)

    EdgeStatus.objects.update_or_create(edge_id=EDGE, defaults={"connected": True})
    shipped = _drain_pass(tuples, batch, in_flight, data_port)
    if not orm_tuples:  # the TLS run: the shipped drain alone
        return {"rate": tuples / shipped, "seconds": round(shipped, 2), "rss_mib": round(peak_rss_mib("self") or 0, 1)}
    orm_shipped = _drain_pass(orm_tuples, batch, in_flight, data_port)  # the same size as the ORM's pass
    orm = _drain_pass(orm_tuples, batch, in_flight, data_port, OrmAck)
    one_in_flight = _drain_pass(tuples, batch, 1, data_port)
    unbatched = _drain_pass(baseline_tuples, 1, 1, data_port)
    return {"rate": tuples / shipped, "seconds": round(shipped, 2), "orm_shipped_rate": orm_tuples / orm_shipped,
            "orm_rate": orm_tuples / orm,
            "one_in_flight_rate": tuples / one_in_flight, "unbatched_rate": baseline_tuples / unbatched,
            "rss_mib": round(peak_rss_mib("self") or 0, 1)}


def _ingest_pass(ingestor_class, edge_id, topic, profiler=None):
    """One burst of `ingestor_class` over the whole topic into an empty table; (readings, windows, seconds).
    With a profiler, it samples the burst (not the connect)."""
    from edge_app.models import IngestPosition, WindowAggregate

    WindowAggregate.objects.all().delete()
    IngestPosition.objects.all().delete()
    ingest = ingestor_class(edge_id=edge_id, topic=topic, bootstrap=settings.FOG_KAFKA_BOOTSTRAP,
                            window_seconds=settings.FOG_WINDOW_SECONDS, grace_seconds=settings.FOG_GRACE_SECONDS,
                            idle_seconds=60)
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
    return ingest.totals["readings"], WindowAggregate.objects.count(), seconds


def child_ingest(topic, profile=False):
    """The Ingestor as shipped, then two baselines that each differ from it in one thing: kafka-python's default
    consumer settings, and the ORM's bulk_create in place of the one prepared INSERT run over all rows."""
    from edge_app.ingest import Ingestor
    from edge_app.models import WindowAggregate

    class UntunedConsumer(Ingestor):
        consumer_tuning = {}

    class OrmInsert(Ingestor):
        def insert_windows(self, rows):
            fields = ("household", "window_start", "window_end", "day", "average_w", "readings", "created_at")
            WindowAggregate.objects.bulk_create([WindowAggregate(**dict(zip(fields, row))) for row in rows],
                                                ignore_conflicts=True)

    results = {}
    for name, cls in (("shipped", Ingestor), ("untuned", UntunedConsumer), ("orm", OrmInsert)):
        readings, windows, seconds = _ingest_pass(cls, f"{EDGE}-{name}", topic)
        results[name] = {"rate": readings / seconds, "seconds": round(seconds, 2), "windows": windows}
    if len({r["windows"] for r in results.values()}) != 1:
        raise RuntimeError(f"the ingest passes stored different windows: {results}")
    text = ""
    if profile:  # a pass of its own, so the sampling never slows a measured one
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        readings, _, seconds = _ingest_pass(Ingestor, f"{EDGE}-profiled", topic, profiler)
        text = (f"pyinstrument, the shipped ingest over {readings:,} readings in one process, {seconds:.2f} s "
                f"while sampled:\n" + profiler.output_text(unicode=False, color=False))
    return {**results, "rss_mib": round(peak_rss_mib("self") or 0, 1), "profile": text}
