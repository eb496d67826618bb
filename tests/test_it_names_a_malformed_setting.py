"""A typo in a setting stops every command with one line: the variable, its value, what is expected (issue 19.4).

The README's configuration table is the list of settings a user may set;
every one that can be malformed has a bad value here, so a new setting
without validation turns this test red.
"""

import re

import pytest

from tests.conftest import ROOT, run_manage

# variable -> (a malformed value, the one line the user must see)
BAD_VALUES = {
    "FOG_KAFKA_BOOTSTRAP": ("kafka-without-port", "FOG_KAFKA_BOOTSTRAP='kafka-without-port': expected host:port"),
    "FOG_TOPIC": ("power readings", "FOG_TOPIC='power readings': expected 1..249 of A-Z a-z 0-9 . _ -"),
    "FOG_DATABASE_URL": ("foo", "FOG_DATABASE_URL='foo': expected a database URL such as sqlite:///"),
    "FOG_EDGE_KAFKA_CLIENT": ("librdkafka",
                              "FOG_EDGE_KAFKA_CLIENT='librdkafka': expected one of confluent, kafka-python"),
    "FOG_EDGE_REDIS_URL": ("http://127.0.0.1:6379/0",
                           "FOG_EDGE_REDIS_URL='http://127.0.0.1:6379/0': expected a URL starting with redis://"),
    "FOG_CLOUD_REDIS_URL": ("redis://127.0.0.1:6379/one",
                            "FOG_CLOUD_REDIS_URL='redis://127.0.0.1:6379/one': expected a database number"),
    "FOG_CHANNEL_REDIS_URL": ("redis+cluster://127.0.0.1:7000/",
                              "FOG_CHANNEL_REDIS_URL='redis+cluster://127.0.0.1:7000/': expected a URL starting with "
                              "redis://"),
    "FOG_EDGE_ID": ("edge 1", "FOG_EDGE_ID='edge 1': expected 1..64 characters of A-Z a-z 0-9 . _ -, not dots alone"),
    "FOG_CLOUD_HOST": ("tcp://cloud:63271", "FOG_CLOUD_HOST='tcp://cloud:63271': expected a host name or IP address"),
    "FOG_ROLE": ("fog", "FOG_ROLE='fog': expected one of ALL, EDGE, CLOUD"),
    "FOG_CLOUD_BIND": ("0.0.0.0:80", "FOG_CLOUD_BIND='0.0.0.0:80': expected a host name or IP address"),
    "FOG_CLOUD_HOUSEHOLDS_PER_EDGE": ("0", "FOG_CLOUD_HOUSEHOLDS_PER_EDGE=0: expected a whole number >= 1"),
    "FOG_HEARTBEAT_PORT": ("0", "FOG_HEARTBEAT_PORT=0: expected 1..65535"),
    "FOG_DATA_PORT": ("70000", "FOG_DATA_PORT=70000: expected 1..65535"),
    "FOG_WINDOW_SECONDS": ("five", "FOG_WINDOW_SECONDS='five': expected a whole number"),
    "FOG_GRACE_SECONDS": ("-1", "FOG_GRACE_SECONDS='-1': expected a number >= 0"),
    "FOG_LIVE_GRACE_SECONDS": ("1e16", "FOG_LIVE_GRACE_SECONDS='1e16': expected a number >= 0 and <= 3600"),
    "FOG_EDGE_RETENTION_DAYS": ("0", "FOG_EDGE_RETENTION_DAYS=0: expected a whole number >= 1"),
    "FOG_EDGE_BUDGET_TUPLES": ("-5", "FOG_EDGE_BUDGET_TUPLES=-5: expected a whole number >= 0"),
    "FOG_EDGE_BUDGET_LOW_WATER_PERCENT": ("100", "FOG_EDGE_BUDGET_LOW_WATER_PERCENT=100: expected 1..99"),
    "FOG_EDGE_RETENTION_MARGIN_HOURS": ("soon", "FOG_EDGE_RETENTION_MARGIN_HOURS='soon': expected a number"),
    "FOG_PRICE_EUR_PER_KWH": ("0,30", "FOG_PRICE_EUR_PER_KWH='0,30': expected a number"),
    "FOG_LOG_LEVEL": ("LOUD", "FOG_LOG_LEVEL='LOUD': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    "FOG_TOOLING": ("sometimes", "FOG_TOOLING='sometimes': expected one of 1/0, true/false"),
    "FOG_LIVE_WINDOWS": ("maybe", "FOG_LIVE_WINDOWS='maybe': expected one of 1/0, true/false"),
    "FOG_WINDOW_STAGGER": ("maybe", "FOG_WINDOW_STAGGER='maybe': expected one of 1/0, true/false"),
    "FOG_FULL_GC_SECONDS": ("-60", "FOG_FULL_GC_SECONDS=-60: expected a whole number >= 0"),
    "DJANGO_DEBUG": ("maybe", "DJANGO_DEBUG='maybe': expected one of 1/0, true/false"),
    "FOG_TIME_ZONE": ("Mars/Base", "FOG_TIME_ZONE='Mars/Base': expected a time zone name such as Europe/Berlin"),
    "FOG_CLOUD_MAX_CONNECTIONS": ("0", "FOG_CLOUD_MAX_CONNECTIONS=0: expected 1..100000"),
    "FOG_TLS_MUTUAL": ("maybe", "FOG_TLS_MUTUAL='maybe': expected one of 1/0, true/false"),
    "FOG_CLOUD_KEY_PREFIX": ("fog{1}:", "FOG_CLOUD_KEY_PREFIX='fog{1}:': expected 1..64 characters without { } * ? [ ] "
                             "\\ or blanks"),
    "FOG_TLS_SERVER_NAME": ("https://cloud", "FOG_TLS_SERVER_NAME='https://cloud': expected a host name or IP address"),
}
# Settings any text is good for, or whose mistakes span settings (system checks, tests/test_it_checks_settings.py),
# or that are checked where they are used (FOG_VAR_DIR: tests/test_it_creates_the_var_folder.py; the TLS files:
# a system check, tests/test_it_refuses_to_expose_the_cloud.py).
FREE_OR_CHECKED = {"FOG_EDGE_SECRET", "FOG_EDGE_SECRETS", "FOG_EDGE_SECRETS_FILE",
                   "FOG_VAR_DIR", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "FOG_TLS_CA", "FOG_CLOUD_TLS_CERT",
                   "FOG_EDGE_TLS_CERT"}


def readme_settings():
    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", table, re.MULTILINE))


def test_it_has_a_malformed_example_for_every_setting_the_readme_lists():
    documented = readme_settings()
    assert len(documented) > 15  # the table was found and parsed
    assert documented - FREE_OR_CHECKED == set(BAD_VALUES), "a README setting without a validation test"


@pytest.mark.parametrize("variable", sorted(BAD_VALUES))
def test_it_prints_one_line_and_exits_2_for_a_malformed_setting(variable):
    value, expected = BAD_VALUES[variable]
    result = run_manage("check", env={variable: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # one line, no traceback
    assert result.stderr.startswith(expected), result.stderr


@pytest.mark.parametrize("command", [["migrate", "--check"], ["runcloud", "--help"], ["runsimulation", "--until", "1"]])
def test_it_stops_every_command_the_same_way(command):
    result = run_manage(*command, env={"FOG_LOG_LEVEL": "loud"})
    assert result.returncode == 2
    assert result.stderr == "FOG_LOG_LEVEL='loud': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL\n"
    assert result.stdout == ""


@pytest.mark.parametrize("url", ["mysql://fog:secret@db/fog", "oracle://db/fog", "redis://127.0.0.1:6379/0"])
def test_it_names_a_database_the_edge_does_not_run_on(url, monkeypatch):
    # Another engine's URL: the setting's one line naming the two it runs on, not a missing driver's traceback.
    from fogsite.env import SettingError, env_database

    monkeypatch.setenv("FOG_DATABASE_URL", url)
    with pytest.raises(SettingError) as raised:
        env_database("FOG_DATABASE_URL", "sqlite:///edge.sqlite3")
    assert str(raised.value) == (f"FOG_DATABASE_URL={url!r}: expected a database URL such as "
                                 "sqlite:///path/edge.sqlite3 or postgres://user:password@host:5432/name "
                                 "(SQLite or PostgreSQL)")


@pytest.mark.parametrize("url", ["sqlite:///var/edge.sqlite3", "postgres://fog:pw@db:5432/fog",
                                 "postgresql://fog@db/fog"])
def test_it_reads_the_databases_the_edge_runs_on(url, monkeypatch):
    from fogsite.env import env_database

    monkeypatch.setenv("FOG_DATABASE_URL", url)
    assert env_database("FOG_DATABASE_URL", "")["ENGINE"].rsplit(".", 1)[-1] in ("sqlite3", "postgresql")
