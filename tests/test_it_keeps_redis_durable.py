import uuid


def test_it_round_trips_a_value(redis_client):
    key = f"test:{uuid.uuid4().hex}"
    redis_client.set(key, "value", ex=60)
    assert redis_client.get(key) == b"value"


def test_it_runs_redis_with_an_fsynced_append_only_file(redis_client):
    # The cloud's ACK promise rests on this: each write is on disk before Redis answers.
    assert redis_client.config_get("appendonly") == {"appendonly": "yes"}
    assert redis_client.config_get("appendfsync") == {"appendfsync": "always"}
