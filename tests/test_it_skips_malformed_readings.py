"""Each kind of bad Kafka message is counted and skipped; the good ones around it all arrive."""

import pytest

from edge_app.models import EdgeStatus, WindowAggregate
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
