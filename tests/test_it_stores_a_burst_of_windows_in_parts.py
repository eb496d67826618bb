"""A flush of many closed windows (at real time every household's window closes within a second) commits
them in parts, so the sender starts on the first part while the rest is written; a crash between parts
loses nothing and counts nothing twice."""

import pytest

from edge_app import ingest as ingest_module
from edge_app.ingest import Ingestor
from edge_app.models import EdgeStatus, WindowAggregate
from tests.conftest import produce, read_to_end, reading

T0 = 1_577_142_000_000
HOUSEHOLDS = 23


def _ingestor(topic, bootstrap):
    return Ingestor(edge_id="edge-parts", topic=topic, bootstrap=bootstrap, window_seconds=5, grace_seconds=2,
                    idle_seconds=60)


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_stores_a_burst_in_parts_and_a_crash_between_parts_counts_nothing_twice(kafka_bootstrap, topic,
                                                                                  monkeypatch):
    monkeypatch.setattr(ingest_module, "STORE_PART_ROWS", 5)
    produce(kafka_bootstrap, topic, [reading(f"h{h}", T0 + i * 1000, 10.0 * h + i) for h in range(HOUSEHOLDS)
                                     for i in range(5)])
    inserted = []
    real_insert = Ingestor.insert_windows

    def insert_then_crash(self, rows):
        if len(inserted) == 2:  # two parts are committed; the machine dies while writing the third
            raise RuntimeError("killed")
        inserted.append(len(rows))
        return real_insert(self, rows)

    first = read_to_end(_ingestor(topic, kafka_bootstrap))
    first.book.close_all()
    monkeypatch.setattr(Ingestor, "insert_windows", insert_then_crash)
    with pytest.raises(RuntimeError):
        first.flush()
    first.source.close()
    assert inserted == [5, 5] and WindowAggregate.objects.count() == 10  # visible to the sender already
    assert EdgeStatus.objects.get(edge_id="edge-parts").windows == 10

    monkeypatch.setattr(Ingestor, "insert_windows", real_insert)
    second = read_to_end(_ingestor(topic, kafka_bootstrap))  # resumes where the last whole flush left it
    assert second.finish() == HOUSEHOLDS
    second.close()
    stored = sorted(WindowAggregate.objects.values_list("household", "average_w", "readings"))
    assert stored == sorted((f"h{h}", 10.0 * h + 2, 5) for h in range(HOUSEHOLDS))
    assert EdgeStatus.objects.get(edge_id="edge-parts").windows == HOUSEHOLDS


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_windows_of_a_failed_part_for_the_flush_on_the_way_out(kafka_bootstrap, topic, monkeypatch):
    from edge_app.models import IngestPosition

    monkeypatch.setattr(ingest_module, "STORE_PART_ROWS", 5)
    produce(kafka_bootstrap, topic, [reading(f"h{h}", T0 + i * 1000, 1.0) for h in range(HOUSEHOLDS) for i in range(5)])
    ingest = read_to_end(_ingestor(topic, kafka_bootstrap))
    ingest.flush()  # the timer's flush, with every window still open: positions at their first readings
    ingest.book.close_all()
    real_insert, calls = Ingestor.insert_windows, []

    def locked_once(self, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise RuntimeError("database is locked")
        return real_insert(self, rows)

    monkeypatch.setattr(Ingestor, "insert_windows", locked_once)
    with pytest.raises(RuntimeError):
        ingest.store_closed()
    assert len(ingest.book.closed) == HOUSEHOLDS - 5 and ingest.dirty  # the failed part is still there
    ingest.flush()  # what the loop's way out does (IngestStep.close)
    ingest.close()
    assert WindowAggregate.objects.count() == HOUSEHOLDS and not ingest.book.closed
    assert sum(p.resume_offset for p in IngestPosition.objects.filter(edge_id="edge-parts")) == HOUSEHOLDS * 5


@pytest.mark.django_db(transaction=True)
def test_it_stores_a_burst_in_household_order_whatever_order_it_closed_in(monkeypatch):
    """Each part's rows then go into one run of the (household, window_start) index (`bench store`)."""
    from edge_app.windows import ClosedWindow

    monkeypatch.setattr(ingest_module, "STORE_PART_ROWS", 5)
    ingest = _ingestor("unused", "")
    names = [f"h{h:02d}" for h in range(HOUSEHOLDS)]
    closed_order = names[1::2] + names[::-2]  # neither sorted nor reversed
    ingest.book.closed.extend(ClosedWindow(name, T0, T0 + 5000, 1.0, 3) for name in closed_order)
    assert ingest.store_closed() == HOUSEHOLDS and not ingest.book.closed
    assert list(WindowAggregate.objects.order_by("id").values_list("household", flat=True)) == names
