def test_it_round_trips_a_value(redis_client):
    redis_client.set("fog:test:key", "value")
    assert redis_client.get("fog:test:key") == b"value"


def test_it_runs_redis_with_an_fsynced_append_only_file(redis_client):
    # The cloud's ACK promise rests on this: each write is on disk before Redis answers.
    assert redis_client.config_get("appendonly") == {"appendonly": "yes"}
    assert redis_client.config_get("appendfsync") == {"appendfsync": "always"}
