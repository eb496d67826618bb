"""`runsimulation` stopped by SIGINT (Ctrl-C), SIGTERM (honcho, systemd) or SIGHUP (its terminal closed) ends
cleanly (issue 19.6).

No traceback, a summary line that says which signal ended the run, exit
status 0, and every reading it counted as sent is in Kafka.
"""

import signal
import subprocess
import sys
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.conftest import ROOT, catches_signal, child_env, consume_all, consume_readings, wait_for

STOP_WITHIN_S = 15  # the README promises 5 s; a loaded test machine gets slack


def _in_topic(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


# A spread run (simulation/spread.py) sends the rest of a step it handed over at once when stopped.
# SIGHUP: the terminal it ran in closed.
@pytest.mark.parametrize("signum,spread", [(signal.SIGINT, "off"), (signal.SIGTERM, "on"), (signal.SIGHUP, "off")])
def test_it_stops_with_a_summary_on_a_signal(kafka_bootstrap, topic, signum, spread):
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runsimulation", "--households", "20", "--speed", "1",
         "--start", "now", "--until", "3600", "--spread", spread, "--topic", topic, "--no-progress"],
        cwd=ROOT, env=child_env({}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _in_topic(kafka_bootstrap, topic) > 0, timeout=60), "no reading reached Kafka"
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=STOP_WITHIN_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith(f"simulation: ended={signum.name} sent="), stdout
    sent = int(summary.split("sent=")[1].split()[0])
    assert sent > 0 and "failed=0" in summary
    assert len(consume_readings(kafka_bootstrap, topic, sent, timeout_ms=10000)) == sent  # all it counted, no more


def test_it_stops_a_send_that_waits_for_kafka_to_take_readings(kafka_bootstrap, topic, monkeypatch):
    """While Kafka takes nothing the local queue stays full and a send waits: a stop request ends the wait,
    and the reading it could not hand over is counted as not accepted."""
    from simulation import producer as module

    monkeypatch.setattr(module, "QUEUE_MAX_MESSAGES", 1)
    monkeypatch.setattr(module, "LINGER_MS", 8000)  # the one queued reading stays local that long: the queue is full
    stop = []
    producer = module.ConfluentProducer(kafka_bootstrap, topic, stop_flag=lambda: stop[0] if stop else None)
    producer.send(b"house-1", b"first")
    stop.append("SIGTERM")
    started = time.monotonic()
    for number in range(500):  # the rest of the step: a reading of every household
        producer.send(f"house-{number}".encode(), b"later")
    assert time.monotonic() - started < 2
    assert producer.close(timeout=30) == 500
    assert producer.sent == 1 and "SIGTERM" in producer.first_error
    assert [message.value for message in consume_all(kafka_bootstrap, topic, 1)] == [b"first"]


def test_it_keeps_back_a_whole_step_built_ahead_when_a_stop_comes_before_its_moment():
    """Built ahead, a step is in the sinks' hands (the Kafka adapter's, --collect's summary's) before its moment:
    a stop that comes first keeps all of it back, from every sink whichever mosaik steps first (it alternates);
    one that comes once the step is due, as when building it outlasted its lead, does not."""
    from simulation.scenario import RunStats

    stop = []
    stats = RunStats(until=10, step_ms=2000, build_ahead=True, speed=1.0, stop_flag=lambda: stop[0] if stop else None)
    stats.pace(0)  # the run's clock starts: the step of second 0 is due now
    assert stats.release(0) and stats.release(0)
    stop.append("SIGTERM")
    started = time.monotonic()
    assert not stats.release(2) and not stats.release(2)  # 2 s before its moment
    assert time.monotonic() - started < 1  # the stop ends the wait

    stop.clear()
    fast = RunStats(until=10, step_ms=2000, build_ahead=True, speed=1000.0, stop_flag=lambda: stop[0] if stop else None)
    fast.pace(0)  # the step of second 2 is due 2 ms later
    time.sleep(0.05)
    stop.append("SIGTERM")
    assert fast.release(2) and fast.release(2)


def test_it_stops_within_a_second_while_kafka_has_not_answered_yet(topic):
    """Before its stream starts the simulation waits up to CONNECT_TIMEOUT_S for Kafka at each of its first
    steps (the topic's metadata, its creation, its partitions): a stop then ends the wait, with its summary."""
    from tests.conftest import free_port

    child = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runsimulation", "--households", "5", "--speed", "1", "--start",
         "now", "--until", "60", "--topic", topic, "--no-progress"],
        cwd=ROOT, env=child_env({"FOG_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}),  # nothing listens there
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: catches_signal(child.pid, signal.SIGTERM), timeout=60, interval=0.05)
        time.sleep(0.5)  # on into the producer's wait for an answer
        asked = time.monotonic()
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=STOP_WITHIN_S)
        took = time.monotonic() - asked
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0 and took < 2, (took, stderr)
    assert stdout.strip().splitlines()[-1].startswith("simulation: ended=SIGTERM sent=0 failed=0"), stdout
