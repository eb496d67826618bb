"""Strict readers for settings from the environment.

Every helper takes the variable's name and a default, so the project runs
with no environment at all; a value that is set but wrong stops start-up
with one line naming the variable, its value and what it expected
(manage.py prints that line alone and exits with status 2). The option_*
types at the end hold a command's options to the same rules (argparse's one
line, exit status 2), so an option that stands in for a setting has its limits.
"""

import argparse
import ipaddress
import math
import os
import re
from urllib.parse import parse_qs, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# Kafka's own rule for topic names (FOG_TOPIC, runedge --topic).
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
TOPIC_EXPECTED = "1..249 of A-Z a-z 0-9 . _ - (a Kafka topic name)"
MIN_PORT, MAX_PORT = 1, 65535
SETTING_ERROR_STATUS = 2


class SettingError(ImproperlyConfigured):
    """One setting's value is malformed; the message is the whole story (no traceback needed)."""


class Invalid(ValueError):
    """A value outside its rule: `shown` is the value as the message shows it, `expected` what it should be."""

    def __init__(self, shown, expected):
        super().__init__(f"{shown}: expected {expected}")
        self.shown, self.expected = shown, expected


def _range_text(minimum, maximum):
    if minimum is not None and maximum is not None:
        return f"{minimum}..{maximum}"
    if minimum is not None:
        return f"a whole number >= {minimum}"
    return f"a whole number <= {maximum}"


def _number_text(minimum, maximum, above):
    bounds = ([f"> {above}"] if above is not None else []) + ([f">= {minimum}"] if minimum is not None else []) \
        + ([f"<= {maximum}"] if maximum is not None else [])
    return "a number " + " and ".join(bounds) if bounds else "a finite number"


def whole_number(text, minimum=None, maximum=None):
    """The whole number `text` names, within minimum..maximum (either may be None); Invalid otherwise."""
    try:
        number = int(text)
    except ValueError:
        raise Invalid(repr(text), "a whole number") from None
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        raise Invalid(str(number), _range_text(minimum, maximum))
    return number


def real_number(text, minimum=None, maximum=None, above=None):
    """The finite number `text` names, >= minimum, <= maximum and > above (each may be None); Invalid otherwise."""
    try:
        number = float(text)
    except ValueError:
        raise Invalid(repr(text), "a number") from None
    if not math.isfinite(number) or minimum is not None and number < minimum or (
            maximum is not None and number > maximum) or above is not None and number <= above:
        raise Invalid(repr(text), _number_text(minimum, maximum, above))
    return number


def _raw(name):
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name, default):
    value = _raw(name)
    return default if value is None or value == "" else value


def env_int(name, default, *, minimum=None, maximum=None):
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return whole_number(value, minimum, maximum)
    except Invalid as exc:
        raise SettingError(f"{name}={exc}") from None


def env_float(name, default, *, minimum=None, maximum=None):
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return real_number(value, minimum, maximum)
    except Invalid as exc:
        raise SettingError(f"{name}={exc}") from None


def env_bool(name, default):
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise SettingError(f"{name}={value!r}: expected one of 1/0, true/false, yes/no, on/off")


def env_list(name, default):
    value = _raw(name)
    if value is None or value == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name, default, choices, *, fold=str.upper):
    """One of `choices`, after `fold` (upper-case by default, so `info` reads as INFO; str.lower for
    lower-case words such as a client library's name)."""
    text = env_str(name, default)
    if fold(text) not in choices:
        raise SettingError(f"{name}={text!r}: expected one of {', '.join(choices)}")
    return fold(text)


def _match(text, pattern, expected):
    if not pattern.fullmatch(text):
        raise Invalid(repr(text), expected)
    return text


def env_match(name, default, pattern, expected):
    """A string that must match `pattern` (a compiled regex); `expected` says what in words."""
    try:
        return _match(env_str(name, default), pattern, expected)
    except Invalid as exc:
        raise SettingError(f"{name}={exc}") from None


def _host(text):
    if not _is_host(text):
        raise Invalid(repr(text), "a host name or IP address (no scheme, port or path)")
    return text


def env_host(name, default):
    """A host name or an IPv4/IPv6 address, without scheme, port or path."""
    try:
        return _host(env_str(name, default))
    except Invalid as exc:
        raise SettingError(f"{name}={exc}") from None


def _is_host(value):
    if value.startswith("[") != value.endswith("]"):
        return False
    try:
        address = ipaddress.ip_address(value[1:-1] if value.startswith("[") else value)
    except ValueError:
        return bool(HOSTNAME_RE.match(value))
    return not getattr(address, "scope_id", None)  # nng takes no %zone: fe80::1%eth0 can never be dialled


def env_port(name, default):
    return env_int(name, default, minimum=MIN_PORT, maximum=MAX_PORT)


def url_host(host):
    """`host` as a URL writes it: an IPv6 address in brackets (tcp://[::1]:63270), anything else as it is."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    return f"[{address}]" if address.version == 6 else host


def env_url(name, default, *, schemes):
    value = env_str(name, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise SettingError(f"{name}={value!r}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected a port number {MIN_PORT}..{MAX_PORT} after the host") from None
    return value


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def env_redis_url(name, default, *, cluster=False):
    """A redis://, rediss:// or unix:// URL whose database (the path) is a number; with `cluster`, also
    redis+cluster:// or rediss+cluster:// (a node of a Redis Cluster, which has only database 0)."""
    value = env_url(name, default, schemes=("redis", "rediss", "unix") + (CLUSTER_SCHEMES if cluster else ()))
    parts = urlsplit(value)
    if parts.scheme in CLUSTER_SCHEMES and parts.path.strip("/") not in ("", "0"):
        raise SettingError(f"{name}={value!r}: a Redis Cluster has only database 0; write {parts.scheme}://"
                           f"{parts.netloc}/")
    db = parts.path.lstrip("/") if parts.scheme != "unix" else parse_qs(parts.query).get("db", ["0"])[0]
    if not (db or "0").isdigit():
        raise SettingError(f"{name}={value!r}: expected a database number after the host, as in redis://host:6379/0")
    return value


# The edge's database engines (SQLite, PostgreSQL) under the URL schemes dj-database-url gives them.
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "pgsql")


def env_database(name, default, **options):
    """Django's DATABASES entry from a SQLite or PostgreSQL URL (dj-database-url), its errors named after the
    variable: another engine's URL (mysql://) is one, not an ImproperlyConfigured from a missing driver."""
    import dj_database_url

    value = env_str(name, default)
    try:
        if urlsplit(value).scheme not in DATABASE_SCHEMES:
            raise ValueError(value)
        return dj_database_url.parse(value, **options)
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected a database URL such as sqlite:///path/edge.sqlite3 "
                           "or postgres://user:password@host:5432/name (SQLite or PostgreSQL)") from None


def ensure_folder(path, name, value):
    """Create the folder `path` (and its parents) unless it exists; if it can't be, a SettingError
    naming the setting `name` (whose value `value` put the folder there)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SettingError(f"{name}={value!r}: can't create the folder {path} ({exc.strerror})") from None


def host_ports(value):
    """The (host, port text) pairs of `host:port[,host:port...]`, a host in brackets (IPv6) without them; a pair
    with no colon has the host ''."""
    pairs = []
    for part in value.split(","):
        host, _, port = part.strip().rpartition(":")
        pairs.append((host.strip("[]"), port))
    return pairs


def env_hostport(name, default):
    """A `host:port` pair such as a Kafka bootstrap address (comma-separated lists allowed)."""
    value = env_str(name, default)
    for host, port in host_ports(value):
        if not host or not port.isdigit() or not MIN_PORT <= int(port) <= MAX_PORT:
            raise SettingError(f"{name}={value!r}: expected host:port[,host:port...] with ports "
                               f"{MIN_PORT}..{MAX_PORT}")
    return value


def env_timezone(name, default):
    """An IANA time zone name such as Europe/Berlin."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = env_str(name, default)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingError(f"{name}={value!r}: expected a time zone name such as Europe/Berlin or UTC") from None
    return value


def is_loopback(host):
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def env_endpoints(name, default, default_ports, port_names):
    """A comma-separated list of `host` or `host:port:port` (e.g. the cloud replicas' heartbeat and data
    ports) as (host, port, port) tuples; a bare host takes `default_ports`."""
    value = env_str(name, default)
    endpoints = []
    for part in (p.strip() for p in value.split(",")):
        fields = part.split(":")
        ports = fields[1:] if len(fields) == 1 + len(default_ports) else None
        if not _is_host(fields[0]) or len(fields) != 1 and (ports is None or not all(
                p.isdigit() and MIN_PORT <= int(p) <= MAX_PORT for p in ports)):
            raise SettingError(f"{name}={value!r}: expected a host name or IP address, or "
                               f"host:{':'.join(port_names)}, comma-separated ({part!r} is neither)")
        endpoints.append((fields[0], *(tuple(int(p) for p in ports) if ports else default_ports)))
    return endpoints


# --- the same rules for command-line options ------------------------------
# argparse `type`s: a bad value is argparse's one line (`argument --workers: expected 1..1024, got 0`, exit
# status 2), its rule the setting's own where an option stands in for a setting.

def _option(parse, *args, **kwargs):
    def option(text):
        try:
            return parse(text, *args, **kwargs)
        except Invalid as exc:
            raise argparse.ArgumentTypeError(f"expected {exc.expected}, got {exc.shown}") from None
    return option


def option_int(minimum=None, maximum=None):
    """A whole number within minimum..maximum."""
    return _option(whole_number, minimum, maximum)


def option_float(minimum=None, maximum=None, above=None):
    """A finite number >= minimum, <= maximum, > above."""
    return _option(real_number, minimum, maximum, above)


option_port = option_int(MIN_PORT, MAX_PORT)  # as env_port


def option_match(pattern, expected):
    """A string matching `pattern` (as env_match)."""
    return _option(_match, pattern, expected)


option_host = _option(_host)  # as env_host
