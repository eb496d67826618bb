"""Strict readers for settings from the environment.

Every helper takes the variable's name and a default, so the project runs
with no environment at all; a value that is set but wrong stops start-up
with one line naming the variable, its value and what it expected
(manage.py prints that line alone and exits with status 2).
"""

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
SETTING_ERROR_STATUS = 2


class SettingError(ImproperlyConfigured):
    """One setting's value is malformed; the message is the whole story (no traceback needed)."""


def _range_text(minimum, maximum):
    if minimum is not None and maximum is not None:
        return f"{minimum}..{maximum}"
    if minimum is not None:
        return f"a whole number >= {minimum}"
    return f"a whole number <= {maximum}"


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
        number = int(value)
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected a whole number") from None
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        raise SettingError(f"{name}={number}: expected {_range_text(minimum, maximum)}")
    return number


def env_float(name, default, *, minimum=None):
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected a number") from None
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        raise SettingError(f"{name}={value!r}: expected a number >= {minimum}")
    return number


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


def env_match(name, default, pattern, expected):
    """A string that must match `pattern` (a compiled regex); `expected` says what in words."""
    value = env_str(name, default)
    if not pattern.fullmatch(value):
        raise SettingError(f"{name}={value!r}: expected {expected}")
    return value


def env_host(name, default):
    """A host name or an IPv4/IPv6 address, without scheme, port or path."""
    value = env_str(name, default)
    if not _is_host(value):
        raise SettingError(f"{name}={value!r}: expected a host name or IP address (no scheme, port or path)")
    return value


def _is_host(value):
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return bool(HOSTNAME_RE.match(value))
    return True


def env_url(name, default, *, schemes):
    value = env_str(name, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise SettingError(f"{name}={value!r}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected a port number 1..65535 after the host") from None
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


def env_database(name, default, **options):
    """Django's DATABASES entry from a database URL (dj-database-url), its errors named after the variable."""
    import dj_database_url

    value = env_str(name, default)
    try:
        return dj_database_url.parse(value, **options)
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected a database URL such as sqlite:///path/edge.sqlite3 "
                           "or postgres://user:password@host:5432/name") from None


def ensure_folder(path, name, value):
    """Create the folder `path` (and its parents) unless it exists; if it can't be, a SettingError
    naming the setting `name` (whose value `value` put the folder there)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SettingError(f"{name}={value!r}: can't create the folder {path} ({exc.strerror})") from None


def env_hostport(name, default):
    """A `host:port` pair such as a Kafka bootstrap address (comma-separated lists allowed)."""
    value = env_str(name, default)
    for part in value.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingError(f"{name}={value!r}: expected host:port[,host:port...] with ports 1..65535")
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
                p.isdigit() and 0 < int(p) < 65536 for p in ports)):
            raise SettingError(f"{name}={value!r}: expected a host name or IP address, or "
                               f"host:{':'.join(port_names)}, comma-separated ({part!r} is neither)")
        endpoints.append((fields[0], *(tuple(int(p) for p in ports) if ports else default_ports)))
    return endpoints
