"""The cloud's list of edges allowed to deliver: `id:secret` pairs, inline or from a file."""

import re
from collections import Counter
from dataclasses import dataclass

MIN_SECRET_BYTES = 32  # an edge secret on a reachable cloud: 256 bits, the HMAC-SHA256 tag's own strength
# Fewer different characters than this in a secret of any length is a pattern ("a" * 32), not a random secret: a
# random one of MIN_SECRET_BYTES characters has more, even when they are hex digits, all but never.
MIN_SECRET_SYMBOLS = 8
# A secret whose characters mostly repeat those a fixed distance before them is a pattern with a few changes
# ("password" * 4 + "1", "1234567890" * 3 + "12", "a" * 35 + "bcdefgh"): in a random one, about one in its
# alphabet's size does, at any distance.
MAX_REPEATED_SHARE = 0.5
REPEAT_CHECKED = 256  # characters of a secret that check reads (it takes their square): a long one's start will do

# In a file's secret: a comma, then what reads as an edge id and its ':'. A file holds one pair a line (a secret may
# hold a comma); pairs a file put on one line with commas, as the inline setting takes them, would be one edge's
# secret, and every edge of that line refused.
PAIR_INSIDE_RE = re.compile(r",\s*[A-Za-z0-9._-]{1,64}:")

# What can be wrong with the list as a whole; `manage.py check` gives each a check id of its own.
UNREADABLE, MALFORMED, REPEATED, EMPTY = "unreadable", "malformed", "repeated", "empty"


@dataclass(frozen=True)
class SecretsProblem:
    kind: str  # UNREADABLE, MALFORMED, REPEATED or EMPTY
    message: str  # one line naming the setting (and the file), edge ids at most, never a secret


def secrets_source(path):
    """The setting the pairs come from, as a message names it."""
    return f"FOG_EDGE_SECRETS_FILE={path}" if path else "FOG_EDGE_SECRETS"


def edge_secrets_text(inline, path):
    """The id:secret pairs' text: from the file at `path` when set, else `inline`.

    Raises OSError if the file can't be read, UnicodeDecodeError if it is not UTF-8 text."""
    if not path:
        return inline
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8-sig")  # whole: an error's byte is the file's; a BOM is no id's


def parse_edge_secrets(text, lines_only=False):
    """{edge id: secret} from `id:secret` pairs separated by commas or new lines (`lines_only`: by new lines
    alone, as in a file, where a secret may hold a comma: cut there, its rest would be read as a pair of its
    own, and a message could name a piece of it as an edge id).

    Returns (pairs, bad, repeated): bad lists the edge ids (never the secrets) of
    entries that are not pairs, repeated the ids listed more than once (which
    secret would count is anyone's guess), so a message can name them safely.
    """
    pairs, bad, seen = {}, [], Counter()
    items = text.splitlines() if lines_only else text.replace("\n", ",").split(",")
    for number, item in enumerate(filter(None, (p.strip() for p in items)), 1):
        if item.startswith("#"):
            continue
        edge_id, sep, secret = item.partition(":")
        if not sep:  # no id to name: the entry may be a secret alone
            bad.append(f"entry {number}, which has no ':'")
        elif not edge_id.strip() or not secret.strip():
            bad.append(edge_id.strip() or "?")
        elif lines_only and PAIR_INSIDE_RE.search(secret):
            bad.append(f"{edge_id.strip()} (its line holds more pairs, separated by commas: one pair a line in a file)")
        else:
            pairs[edge_id.strip()] = secret.strip()
            seen[edge_id.strip()] += 1
    return pairs, bad, [edge for edge, count in seen.items() if count > 1]


def read_edge_secrets(inline, path):
    """(pairs, problems) of FOG_EDGE_SECRETS or FOG_EDGE_SECRETS_FILE: what `check` reports and runcloud
    refuses, each problem a SecretsProblem whose message is one line."""
    source = secrets_source(path)
    try:
        text = edge_secrets_text(inline, path)
    except OSError as exc:
        return {}, [SecretsProblem(UNREADABLE, f"{source}: can't be read ({exc.strerror or exc})")]
    except UnicodeDecodeError as exc:
        return {}, [SecretsProblem(UNREADABLE, f"{source}: not UTF-8 text (byte {exc.start + 1} of the file)")]
    pairs, bad, repeated = parse_edge_secrets(text, lines_only=bool(path))
    problems = []
    if bad:
        problems.append(SecretsProblem(MALFORMED, f"{source} has entries that are not id:secret pairs "
                                                  f"(edge ids: {', '.join(bad)})"))
    if repeated:
        problems.append(SecretsProblem(REPEATED, f"{source} lists edge ids more than once: {', '.join(repeated)}"))
    if not pairs and not bad:
        problems.append(SecretsProblem(EMPTY, f"{source} holds no id:secret pairs: no edge could deliver"))
    return pairs, problems


def weak_secrets(pairs, dev_secret):
    """Why each weak secret is weak, as "edge id (reason)" (never the secret): the development default, shorter
    than MIN_SECRET_BYTES, fewer than MIN_SECRET_SYMBOLS different characters, a shorter part repeated
    ("abcdefgh" * 4, or most of it: MAX_REPEATED_SHARE), or the secret of another edge
    too (frames tagged with it open as either edge's, so each could deliver as the other)."""
    holders = Counter(pairs.values())
    weak = []
    for edge, secret in pairs.items():
        if secret == dev_secret:
            why = "the development default"
        elif dev_secret and dev_secret in secret:
            why = "the development default with more to it"
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            why = f"shorter than {MIN_SECRET_BYTES} bytes"
        elif len(set(secret)) < MIN_SECRET_SYMBOLS:
            why = f"fewer than {MIN_SECRET_SYMBOLS} different characters"
        elif _mostly_repeated(secret):
            why = "a shorter part repeated"
        elif holders[secret] > 1:
            why = "shared with another edge"
        else:
            continue
        weak.append(f"{edge} ({why})")
    return weak


def _mostly_repeated(secret):
    """Whether, at some distance up to half its length, more than MAX_REPEATED_SHARE of a secret's characters
    are the one that distance before them (of its first REPEAT_CHECKED)."""
    secret = secret[:REPEAT_CHECKED]
    return any(sum(a == b for a, b in zip(secret, secret[shift:])) > MAX_REPEATED_SHARE * (len(secret) - shift)
               for shift in range(1, len(secret) // 2 + 1))
