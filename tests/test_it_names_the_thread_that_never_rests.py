"""bench e2e names the busiest threads of the pipeline's processes and how busy each was: a thread that is always
running or ready to run never waits for its input, so it is the stage that holds the rest back, whatever CPU the
other processes left it. The figures come from the threads' own states, so they hold on a loaded machine too."""

import subprocess
import sys
import time

from tooling.bench.threads import THREAD_SAMPLE_S, ThreadLoad, describe

# A process whose main thread sleeps and whose second thread spins; it ends when its stdin closes.
PROBE = """
import sys, threading
def spin():
    while True:
        pass
threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""
SAMPLED_S = 2.5


def _probe():
    child = subprocess.Popen([sys.executable, "-c", PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def _end(child):
    child.stdin.close()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def test_it_tells_a_thread_that_never_rests_from_one_that_waits():
    child = _probe()
    load = ThreadLoad({"edge": child.pid}, lambda pid: [pid], {child.pid: "ingest loop"})
    try:
        load.start()
        time.sleep(SAMPLED_S)
        threads = load.result()
    finally:
        load.stop()
        _end(child)
    assert len(threads) == 2, threads
    spinning, waiting = threads
    assert spinning["thread"].startswith("edge ingest loop, thread ") and waiting["thread"] == "edge ingest loop"
    # Busy: running or ready to run at nearly every look, even when other work took the cores meanwhile (a test
    # run under nice 19 beside busy ones may give it a few hundredths of a core: its cores say little here).
    assert spinning["busy"] >= 0.8 and spinning["cpu"] > 0, threads
    assert waiting["busy"] <= 0.2 and waiting["cpu"] < 0.05, threads
    assert load.thread.is_alive() is False  # result() ends the sampling


def test_it_counts_a_process_that_came_and_went_over_the_whole_span():
    """Redis rewrites its append-only file in a child that runs flat out for a few seconds of a minute's run: its
    cores are what it used over the run, not over its own few seconds, or it would pass for the busiest."""
    child, late = _probe(), None
    load = ThreadLoad({"probe": child.pid}, lambda pid: [pid] + ([late.pid] if late else []))
    try:
        load.start()
        time.sleep(SAMPLED_S / 2)
        late = _probe()
        time.sleep(1.0)
        _end(late)
        time.sleep(SAMPLED_S / 2)
        threads = load.result()
    finally:
        load.stop()
        _end(child)
        if late:
            _end(late)
    span = max(t["seconds"] for t in threads)
    (brief,) = [t for t in threads if t["seconds"] < span - 0.5 and t["busy"] >= 0.8]  # the late one's spinning thread
    assert brief["cpu"] <= (brief["seconds"] + 2 * THREAD_SAMPLE_S) / span, threads
    assert f"(seen {brief['seconds']:g} s)" in describe([brief, *threads])


def test_it_names_a_loop_it_was_asked_for_and_the_busiest_threads_in_order():
    threads = [{"thread": "redis", "cpu": 0.4, "busy": 0.5, "seconds": 60.0},
               {"thread": "edge ingest loop", "cpu": 0.62, "busy": 0.97, "seconds": 60.0},
               {"thread": "edge sender loop", "cpu": 0.2, "busy": 0.3, "seconds": 60.0},
               {"thread": "cloud", "cpu": 0.1, "busy": 0.1, "seconds": 60.0}]
    threads.sort(key=lambda t: -t["cpu"])
    assert describe(threads) == "edge ingest loop 0.62, busy 97%, redis 0.40, busy 50%, edge sender loop 0.20, busy 30%"
    assert (describe(threads, ["edge ingest loop", "edge heartbeat loop", "edge sender loop"])
            == "edge ingest loop 0.62, busy 97%, edge sender loop 0.20, busy 30%")  # a loop not seen is left out
    assert describe([], ["edge ingest loop"]) == "-"


def test_it_gives_no_rate_for_a_single_look():
    child = _probe()
    try:
        load = ThreadLoad({"probe": child.pid}, lambda pid: [pid])
        load.sample()
        threads = load.result()  # one look: no span to take a rate over
    finally:
        _end(child)
    assert threads == []
