"""A window setting changed while windows are open is refused; once they are stored, it may change.

After a stop the ingest reads again the readings of its open windows. Under another FOG_WINDOW_SECONDS
or FOG_WINDOW_STAGGER they made windows that overlap stored ones: staggered, counted twice; 5 s -> 10 s,
a 10 s window starting where a stored 5 s one did, lost to the unique key. `reconcile` saw neither.
"""

import logging

import pytest

from edge_app.ingest import IngestSetupError, Ingestor
from edge_app.loops import IngestStep
from edge_app.supervisor import Supervisor
from edge_app.models import WindowAggregate
from tests.conftest import household_batches, produce, read_to_end

T0 = 1_577_142_000_000
HOUSEHOLDS, STEPS = 5, 30  # 60 s of readings


def _ingest(kafka_bootstrap, topic, window_seconds, stagger=False):
    return Ingestor(edge_id="edge-test", topic=topic, bootstrap=kafka_bootstrap, window_seconds=window_seconds,
                    grace_seconds=2, idle_seconds=60, stagger=stagger, live_windows=False)


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("window_seconds, stagger", [(10, False), (5, True)], ids=["10 s", "staggered"])
def test_it_refuses_another_layout_while_windows_are_open_and_takes_it_once_they_are_stored(
        kafka_client, kafka_bootstrap, topic, window_seconds, stagger, settings, caplog, services):
    messages, expected = household_batches(HOUSEHOLDS, STEPS, T0)
    produce(kafka_bootstrap, topic, messages)
    first = read_to_end(_ingest(kafka_bootstrap, topic, 5))
    first.flush()  # a stop: the last windows of each household still open
    first.close()
    stored = WindowAggregate.objects.count()
    assert 0 < stored < len(expected)

    changed = _ingest(kafka_bootstrap, topic, window_seconds, stagger)
    with pytest.raises(IngestSetupError) as refused:
        changed.connect()
    changed.close()
    assert "are 5 s windows, and this run's are" in str(refused.value)
    assert "`runedge --burst`" in str(refused.value)
    assert WindowAggregate.objects.count() == stored  # nothing read, nothing stored

    settings.FOG_EDGE_ID, settings.FOG_WINDOW_SECONDS, settings.FOG_WINDOW_STAGGER = "edge-test", window_seconds, stagger
    step = IngestStep({"topic": topic, "kafka_client": kafka_client}, control=None)
    try:
        with caplog.at_level(logging.ERROR, logger="fog.edge"):
            assert not step.step() and not step.step()  # the edge's loop waits, and says why once
    finally:
        step.close()
    said = [r.getMessage() for r in caplog.records if r.name == "fog.edge"]
    assert len(said) == 1 and "the ingest can't start: the open windows of edge edge-test" in said[0]

    # A burst can't finish: its supervisor ends the run at once, failed, with that line.
    supervisor = Supervisor({"burst": True}, stop_flag=lambda: False, out=lambda line: None)
    supervisor.start(with_workers=False)
    burst = IngestStep({"topic": topic, "kafka_client": kafka_client, "burst": True}, supervisor.control)
    try:
        with pytest.raises(IngestSetupError):
            burst.step()
        assert supervisor.handle_one_check() == "failed"
        assert supervisor.failure.startswith("the ingest can't start: the open windows of edge edge-test")
    finally:
        burst.close()
        supervisor.stop()

    same = read_to_end(_ingest(kafka_bootstrap, topic, 5))
    same.finish()  # the end of a burst: every window stored
    same.close()
    assert WindowAggregate.objects.count() == len(expected)

    later = _ingest(kafka_bootstrap, topic, window_seconds, stagger)
    later.connect()  # nothing to read again: the new layout is taken
    later.close()


def test_it_takes_another_layout_once_kafka_deleted_what_would_be_read_again():
    from edge_app.ingest import layout_problem
    from edge_app.models import IngestPosition

    positions = [IngestPosition(partition=0, resume_offset=10, counted_offset=20, windows="5 s"),
                 IngestPosition(partition=1, resume_offset=7, counted_offset=7, windows="5 s")]
    assert "the 10 Kafka records they span" in layout_problem("e", "t", "10 s", positions, {0: 0, 1: 0})
    assert layout_problem("e", "t", "10 s", positions, {0: 20, 1: 7}) == ""  # retention took them
    assert layout_problem("e", "t", "5 s", positions, {0: 0, 1: 0}) == ""
