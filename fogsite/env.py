"""Strict readers for settings from the environment.

Every helper takes the variable's name and a default, so the project runs
with no environment at all; a value that is set but wrong stops start-up
with one line naming the variable and what it expected.
"""

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


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
        raise ImproperlyConfigured(f"{name}={value!r}: expected a whole number") from None
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number}: expected {minimum}..{maximum}")
    return number


def env_float(name, default, *, minimum=None):
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a number") from None
    if number != number or (minimum is not None and number < minimum):
        raise ImproperlyConfigured(f"{name}={value!r}: expected a number >= {minimum}")
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
    raise ImproperlyConfigured(f"{name}={value!r}: expected one of 1/0, true/false, yes/no, on/off")


def env_choice(name, default, choices):
    """One of a fixed set of words, e.g. a client library's name."""
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def env_list(name, default):
    value = _raw(name)
    if value is None or value == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_url(name, default, *, schemes):
    value = env_str(name, default)
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value


def env_hostport(name, default):
    """A `host:port` pair such as a Kafka bootstrap address (comma-separated lists allowed)."""
    value = env_str(name, default)
    for part in value.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(f"{name}={value!r}: expected host:port[,host:port...]")
    return value
