"""The two real Gem House files' first hour, through Kafka and the ingest, give the averages computed here."""

import csv
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from edge_app.models import WindowAggregate
from tests.conftest import ingest_to_end, produce, reading, sample_data_dir

BERLIN = ZoneInfo("Europe/Berlin")


def first_hour(path):
    """(ts ms, watts) of the file's first hour, read here without the project's parser."""
    with open(path, newline="") as handle:
        rows = csv.reader(handle)
        next(rows), next(rows)  # model name, column names
        out = []
        for row in rows:
            when = datetime.strptime(row[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BERLIN)
            if when.hour >= 1:
                break
            out.append((int(when.timestamp() * 1000), int(row[3]) / 1000))
    return out


@pytest.mark.django_db(transaction=True)
def test_it_stores_exactly_the_independently_computed_averages(kafka_client, kafka_bootstrap, topic):
    folder = sample_data_dir()
    expected, messages = {}, []
    for path in sorted(folder.glob("*.csv"))[:2]:
        household = path.stem
        series = first_hour(path)
        messages += [reading(household, ts, watts) for ts, watts in series]
        windows = defaultdict(list)
        for ts, watts in series:
            windows[ts - ts % 5000].append(watts)
        expected.update({(household, start): (sum(v) / len(v), len(v)) for start, v in windows.items()})
    produce(kafka_bootstrap, topic, messages)

    ingest = ingest_to_end(kafka_bootstrap, topic)

    stored = {(t.household, t.window_start): (t.average_w, t.readings) for t in WindowAggregate.objects.all()}
    assert len(stored) == len(expected) >= 2 * 700  # about 720 windows an hour per household
    for key, (average, count) in expected.items():
        assert stored[key][1] == count
        assert stored[key][0] == pytest.approx(average, rel=1e-12, abs=1e-9)
    assert ingest.totals["readings"] == len(messages)
    assert ingest.totals["late"] == ingest.totals["malformed"] == 0
