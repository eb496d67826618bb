"""A reading that comes twice (a producer's retry, a message copied) weighs once in its window's average."""

import pytest

from edge_app.models import EdgeStatus, WindowAggregate
from edge_app.windows import APPLIED, DUPLICATE, LATE, WindowBook
from tests.conftest import ingest_to_end, produce, reading

T0 = 1_577_142_000_000  # a multiple of 5 s


def test_it_applies_the_first_of_two_readings_at_one_time_and_reports_the_second():
    book = WindowBook(5000, 2000, 10)
    assert book.add("h", T0 + 1000, 100.0, 0, 0, 0.0) == APPLIED
    assert book.add("h", T0 + 3000, 300.0, 0, 1, 0.0) == APPLIED
    assert book.add("h", T0 + 3000, 300.0, 1, 0, 0.0) == DUPLICATE  # the same message in another partition
    assert book.add("h", T0 + 1000, 999.0, 0, 2, 0.0) == DUPLICATE  # out of order, another value: the first stands
    assert book.add("h", T0 + 2000, 200.0, 0, 3, 0.0) == APPLIED  # out of order, a time not seen yet
    assert book.add("other", T0 + 1000, 50.0, 0, 4, 0.0) == APPLIED  # another household's time is its own
    book.close_all()
    assert sorted((w.household, w.average, w.count) for w in book.take_closed()) == [("h", 200.0, 3),
                                                                                      ("other", 50.0, 1)]
    assert book.add("h", T0 + 1000, 100.0, 0, 5, 0.0) == LATE  # its window has closed: late, as before


@pytest.mark.django_db(transaction=True)
def test_it_counts_readings_kafka_holds_twice_once_and_says_how_many(kafka_bootstrap, topic):
    messages = []
    for i in range(4):
        first, second = reading("h", T0 + i * 5000, 100.0), reading("h", T0 + i * 5000 + 2000, 300.0)
        messages += [first, second, second] if i % 2 else [first, first, second]
    produce(kafka_bootstrap, topic, messages)

    ingest = ingest_to_end(kafka_bootstrap, topic)

    windows = list(WindowAggregate.objects.order_by("window_start").values_list("window_start", "average_w", "readings"))
    assert windows == [(T0 + i * 5000, 200.0, 2) for i in range(4)]
    assert ingest.totals["duplicates"] == 4 and ingest.totals["late"] == 0
    assert EdgeStatus.objects.get(edge_id="edge-test").duplicates == 4
