import json
from collections import defaultdict

from kafka import KafkaConsumer, KafkaProducer


def test_it_consumes_exactly_the_produced_messages_in_order_per_key(kafka_bootstrap, topic):
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    sent = defaultdict(list)
    for i in range(1000):
        key = f"household-{i % 7}"
        producer.send(topic, key=key.encode(), value=json.dumps({"seq": i}).encode())
        sent[key].append(i)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=5000,
    )
    received = defaultdict(list)
    for count, message in enumerate(consumer, start=1):
        received[message.key.decode()].append(json.loads(message.value)["seq"])
        if count == 1000:
            break
    consumer.close()

    assert sum(len(v) for v in received.values()) == 1000
    assert received == sent  # every key's messages, each once, in send order
