"""A window setting changed while windows are open is refused; once they are stored, it may change.

After a stop the ingest reads again the readings of its open windows. Under another FOG_WINDOW_SECONDS
or FOG_WINDOW_STAGGER they made windows that overlap stored ones: staggered, counted twice; 5 s -> 10 s,
a 10 s window starting where a stored 5 s one did, lost to the unique key. `reconcile` saw neither.
"""

import pytest
from django.core.management import CommandError, call_command

from edge_app.ingest import IngestSetupError, Ingestor
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
        kafka_client, kafka_bootstrap, topic, window_seconds, stagger, settings):
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
    with pytest.raises(CommandError, match="are 5 s windows"):  # runedge says it before starting a worker
        call_command("runedge", "--burst", "--topic", topic)

    same = read_to_end(_ingest(kafka_bootstrap, topic, 5))
    same.finish()  # the end of a burst: every window stored
    same.close()
    assert WindowAggregate.objects.count() == len(expected)

    later = _ingest(kafka_bootstrap, topic, window_seconds, stagger)
    later.connect()  # nothing to read again: the new layout is taken
    later.close()
