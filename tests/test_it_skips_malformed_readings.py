"""Each kind of bad Kafka message is counted and skipped; the good ones around it all arrive. A message that gives a
name the edge reads twice is one of them; one that only seems to is not."""

import pytest

from edge_app.models import EdgeStatus, WindowAggregate
from edge_app.readings import MalformedReading, parse_message
from tests.conftest import ingest_to_end, produce, reading

from tests.corpus import KAFKA_MESSAGES as BAD_MESSAGES

T0 = 1_577_142_000_000


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_counts_and_skips_each_bad_message_and_keeps_every_good_one(kafka_client, kafka_bootstrap, topic):
    messages = []
    for i, bad in enumerate(BAD_MESSAGES.values()):
        messages.append(reading("h", T0 + i * 5000, 100.0))
        messages.append(("h", bad))
        messages.append(reading("h", T0 + i * 5000 + 2000, 200.0))
    produce(kafka_bootstrap, topic, messages)

    ingest = ingest_to_end(kafka_bootstrap, topic)

    assert ingest.totals["malformed"] == len(BAD_MESSAGES)
    assert EdgeStatus.objects.get(edge_id="edge-test").malformed == len(BAD_MESSAGES)
    windows = list(WindowAggregate.objects.order_by("window_start").values_list("window_start", "average_w", "readings"))
    assert windows == [(T0 + i * 5000, 150.0, 2) for i in range(len(BAD_MESSAGES))]


@pytest.mark.parametrize("raw, kept", [
    # The name only looks repeated to a count of the bytes: in a string's value, or an object the edge does not read.
    (b'{"readings": [["h", %d, 1.0]], "note": "the \\"readings\\" above"}' % T0, [("h", T0, 1.0)]),
    (b'{"readings": [["h", %d, 1.0]], "meta": {"readings": 1, "readings": 2}}' % T0, [("h", T0, 1.0)]),
    (b'{"household": "ts", "ts": %d, "power_w": 1.0, "extra": {"ts": 1, "ts": 2}}' % T0, [("ts", T0, 1.0)]),
    # An escape in another name, or the message in UTF-16, takes the exact way and finds nothing twice.
    (b'{"readings": [["h", %d, 1.0]], "n\\u00f6te": 1}' % T0, [("h", T0, 1.0)]),
    (f'{{"readings": [["h", {T0}, 1.0]]}}'.encode("utf-16"), [("h", T0, 1.0)]),
])
def test_it_keeps_a_message_whose_names_it_reads_come_once(raw, kept):
    assert parse_message(raw, T0)[0] == kept


@pytest.mark.parametrize("raw, name", [
    (b'{"readings": [["h", %d, 1.0]], "readings": [["g", %d, 2.0]]}' % (T0, T0), "readings"),
    (b'{"re\\u0061dings": [["h", %d, 1.0]], "readings": [["g", %d, 2.0]]}' % (T0, T0), "readings"),
    (b'{"household": "h", "ts": %d, "ts": %d, "power_w": 1.0}' % (T0, T0 + 1), "ts"),
    (b'{"readings": [["h", %d, 1.0]], "note": "a\\nb", "readings": [["g", %d, 2.0]]}' % (T0, T0), "readings"),
    (b'{"readings": [["h", %d, 1.0]], "readings": null, "household": "h", "ts": %d, "power_w": 1.0}' % (T0, T0),
     "readings"),
])
def test_it_says_which_name_came_twice(raw, name):
    with pytest.raises(MalformedReading, match=f"the name '{name}' twice"):
        parse_message(raw, T0)


def test_it_refuses_a_prototype_message_with_a_field_twice():
    with pytest.raises(MalformedReading, match="the name 'power_value' twice"):
        parse_message(b'{"node_id": "h", "power_value": 1.0, "power_value": 9.0}', T0, legacy_ts=T0)


def test_it_says_why_it_refuses_a_message_too_deep_to_check_for_names_given_twice():
    """orjson reads deeper than json, which the check for names given twice reads with: such a message is refused
    saying so, not with a RecursionError's words."""
    deep = b"[" * 1000 + b"]" * 1000
    with pytest.raises(MalformedReading, match="nested too deep for json to tell whether a name comes twice"):
        parse_message(b'{"readings": [["h", %d, 1.0]], "n\\u00f6te": %s}' % (T0, deep), T0)
