"""`bench windows`: the edge's window book alone, at real time, compiled (`make build`) beside its Python source.

A large share of the ingest's CPU at 100,000 households is its window book (WindowBook.add_many and close_live).
Each run drives one book, in a child process of its own, as the ingest does at real time: households with
staggered windows, a reading every step each, a Kafka message of up to 1000 readings at a time, close_live after
every message, close_idle at the ingest's idle-check interval, and the full garbage collections taken over as the
edge's loops do (fogwire.fullgc). Its figure is readings applied per second of the child's CPU, on a clock
simulated from the readings (nothing waits): the compiled book, beside the same run with edge_app/windows.py run
as Python. Nothing else differs.
"""

import time

from django.conf import settings

from edge_app import compiled
from edge_app.ingest import CLOSE_ROWS, IDLE_CHECK_MAX_SECONDS, IDLE_CHECKS, IDLE_SECONDS
from fogwire.fullgc import FullCollections
from fogwire.limits import MAX_READINGS_PER_MESSAGE
from tooling.bench.common import Figure
from tooling.bench.edge import _child

T0 = 1_796_000_000_000  # the first step's readings (epoch ms); the windows are staggered, wherever it falls
ARRIVAL_MS = 300  # a reading reaches the book this long after its time, as the simulation's do at real time
PARTITIONS = 8
VARIANTS = ("compiled", "source")


def run(households=100_000, seconds=60, step=2, out=print):
    if households < 1 or seconds < 1 or step < 1:
        raise RuntimeError(f"--households, --seconds and --step must be at least 1, not {households}, {seconds}, "
                           f"{step}")
    kind, said = compiled.state()
    if kind != compiled.COMPILED:
        raise RuntimeError(f"{said}: there is no compiled book to measure")
    out(f"windows: the window book alone, {households:,} households with staggered windows, a reading every {step} s "
        f"each, {seconds} simulated s; compiled, then edge_app/windows.py run as Python, each in a child of its own")
    runs = {variant: _child("windows", {"households": households, "seconds": seconds, "step": step,
                                        "variant": variant}) for variant in VARIANTS}
    mine, source = runs["compiled"], runs["source"]
    if mine["closed"] != source["closed"]:
        raise RuntimeError(f"the two books closed {mine['closed']:,} and {source['closed']:,} windows")
    return [Figure(f"window book at real time, {households:,} households, readings applied a second of CPU",
                   mine["rate"], "readings/s", source["rate"], "", {
                       "us a reading": mine["us"], "baseline us a reading": source["us"],
                       "windows closed": f"{mine['closed']:,}", "readings": f"{mine['readings']:,}",
                       "against": "the same readings into edge_app/windows.py run as Python"})]


def _book_module(variant):
    if variant == "compiled":
        import edge_app.windows as module

        if module.__file__ != str(compiled.extension()):
            raise RuntimeError(f"edge_app.windows came from {module.__file__}, not the compiled book")
        return module
    return compiled.source_module()


def child_windows(households, seconds, step, variant):
    module = _book_module(variant)
    idle = IDLE_SECONDS
    book = module.WindowBook(settings.FOG_WINDOW_SECONDS * 1000, int(settings.FOG_GRACE_SECONDS * 1000), idle,
                             live_grace_ms=int(settings.FOG_LIVE_GRACE_SECONDS * 1000), stagger=True)
    names = [f"house-{i:06d}" for i in range(households)]
    messages = [names[i:i + MAX_READINGS_PER_MESSAGE] for i in range(0, households, MAX_READINGS_PER_MESSAGE)]
    check_every = min(idle / IDLE_CHECKS, IDLE_CHECK_MAX_SECONDS)
    step_ms, offset, closed, last_check = step * 1000, 0, 0, 0.0
    collections = FullCollections(settings.FOG_FULL_GC_SECONDS).start()
    try:
        started = time.process_time()
        for k in range(seconds * 1000 // step_ms):
            ts = T0 + k * step_ms
            for index, batch in enumerate(messages):
                wall_ms = ts + ARRIVAL_MS + index * step_ms // len(messages)  # the step's messages spread over it
                now = (wall_ms - T0) / 1000
                book.add_many([(name, ts, 100.0 + (offset + i) % 64) for i, name in enumerate(batch)],
                              index % PARTITIONS, offset, now, wall_ms)
                offset += 1
                while book.close_live(wall_ms, None, CLOSE_ROWS):
                    pass
                if now - last_check >= check_every:
                    last_check = now
                    book.close_idle(now)
                closed += len(book.take_closed())
                collections.handle_one_step()
        cpu = time.process_time() - started
    finally:
        collections.stop()
    readings = households * (seconds * 1000 // step_ms)
    return {"rate": round(readings / cpu), "us": round(cpu / readings * 1e6, 2), "closed": closed,
            "readings": readings}
