"""The bad-input corpus: every malformed input the pipeline must refuse clearly, in one place.

Kafka messages (the ingest counts and skips them), cloud frames v3 (a refusal
reason for the frame, or per tuple; heartbeats too) and legacy v1 (an ERROR
reply, never echoing more than a little of the input), and CSV
lines and files (DataError naming file and line). The per-feature tests
and test_it_survives_the_bad_input_corpus.py both draw from here.
"""

import json
import math

from fogwire import protocol as wire
from fogwire.limits import MAX_MESSAGE_BYTES, MAX_READINGS_PER_MESSAGE

T0 = 1_577_142_000_000
EDGE_ID = "edge-test"
EDGE_SECRET = "test-secret-0123456789"


def _reading(**fields):
    return json.dumps(fields).encode()


KAFKA_MESSAGES = {
    "not JSON": b"power=12",
    "not UTF-8": b"\xff\xfe\x00",
    "empty": b"",
    "JSON list": b"[1, 2]",
    "missing household": _reading(ts=T0, power_w=1.0),
    "household a number": _reading(household=7, ts=T0, power_w=1.0),
    "missing ts": _reading(household="h", power_w=1.0),
    "ts a string": _reading(household="h", ts=str(T0), power_w=1.0),
    "ts a float": _reading(household="h", ts=T0 + 0.5, power_w=1.0),
    "ts in seconds": _reading(household="h", ts=T0 // 1000, power_w=1.0),
    "ts far future": _reading(household="h", ts=4_102_444_800_000, power_w=1.0),
    "power a string": _reading(household="h", ts=T0, power_w="1.0"),
    "power NaN": b'{"household": "h", "ts": 1577142000000, "power_w": NaN}',
    "power Infinity": b'{"household": "h", "ts": 1577142000000, "power_w": Infinity}',
    "power negative": _reading(household="h", ts=T0, power_w=-3.0),
    "power missing": _reading(household="h", ts=T0),
    # Issue 12, finding 6: each once stalled ingest, or made an infinite average.
    "200,000 brackets": b"[" * 200_000,
    "nesting past the parser's recursion limit": b"[" * 4000,
    "larger than any reading": _reading(household="h", ts=T0, power_w=1.0, pad="x" * 5000),
    "power an integer too large for a float": _reading(household="h", ts=T0, power_w=10 ** 400),
    "power 1e308": _reading(household="h", ts=T0, power_w=1e308),
    "power above a house connection": _reading(household="h", ts=T0, power_w=50_000.0),
    "household with a bar": _reading(household="a|b", ts=T0, power_w=1.0),
    "household of dots alone (a path's '..')": _reading(household="..", ts=T0, power_w=1.0),
    "no value (tombstone)": None,
    # Batches (fogwire.limits): unusable as a whole, so each counts once.
    "batch whose readings are not a list": b'{"readings": {"h": [1577142000000, 1.0]}}',
    "batch of more readings than a message may hold": json.dumps(
        {"readings": [["h", T0, 1.0]] * (MAX_READINGS_PER_MESSAGE + 1)}).encode(),
    "batch larger than any message": json.dumps(
        {"readings": [["h", T0, 1.0]], "pad": "x" * MAX_MESSAGE_BYTES}).encode(),
    # A name the edge reads, given twice: JSON parsers differ on which counts, and orjson's last one left the first
    # batch unread and uncounted.
    "batch with its readings twice": b'{"readings": [["h", %d, 1.0]], "readings": [["h", %d, 2.0]]}' % (T0, T0 + 1),
    "batch with its readings twice, the second name spelled with an escape":
        b'{"readings": [["h", %d, 1.0]], "re\\u0061dings": [["h", %d, 2.0]]}' % (T0, T0 + 1),
    "batch with its readings twice, in UTF-16":
        f'{{"readings": [["h", {T0}, 1.0]], "readings": [["h", {T0 + 1}, 2.0]]}}'.encode("utf-16"),
    "batch with its readings twice, the last null, beside a reading's fields":
        b'{"readings": [["h", %d, 1.0]], "readings": null, "household": "h", "ts": %d, "power_w": 3.0}' % (T0, T0 + 1),
    "reading with its power twice": b'{"household": "h", "ts": %d, "power_w": 1.0, "power_w": 2.0}' % T0,
    "reading with its household twice": b'{"household": "h", "household": "g", "ts": %d, "power_w": 1.0}' % T0,
}

# Readings inside a batch that are set aside one by one, the rest of their batch kept.
BATCH_READINGS = {
    "an object, not a list": {"household": "h", "ts": T0, "power_w": 1.0},
    "two fields": ["h", T0],
    "four fields": ["h", T0, 1.0, 2.0],
    "a string of three characters": "abc",
    "household a number": [7, T0, 1.0],
    "household with a bar": ["a|b", T0, 1.0],
    "household of a dot alone (a path's '.')": [".", T0, 1.0],
    "ts a string": ["h", str(T0), 1.0],
    "ts in seconds": ["h", T0 // 1000, 1.0],
    "ts a boolean": ["h", True, 1.0],
    "power a string": ["h", T0, "1.0"],
    "power negative": ["h", T0, -3.0],
    "power an integer too large for a float": ["h", T0, 10 ** 400],
    "power above a house connection": ["h", T0, 50_000.0],
    "null": None,
}


def _columns(**override):
    payload = {"id": [1], "hh": ["h"], "ws": [T0], "we": [T0 + 5000], "avg": [1.5], "n": [2]}
    payload.update(override)
    return payload


def _one_row():
    return [(0, "h-0", T0, T0 + 5000, 100.0, 3)]


def _batch(payload):
    return wire.seal(wire.KIND_BATCH, EDGE_ID, EDGE_SECRET, payload)


def _tagged_as(frame, kind):
    """`frame` with its tag made for another kind (and so, maybe, the other direction)."""
    parts = wire.split(frame)
    tag = wire._tag(EDGE_SECRET, kind, parts.head, parts.body)
    return frame[:len(frame) - len(parts.body) - wire.TAG_BYTES] + tag + parts.body


def _raw(kind, body, edge=EDGE_ID):
    """A frame with a correct tag over any body bytes."""
    head = bytes((kind, len(edge))) + edge.encode() + bytes(wire.NONCE_BYTES)
    return wire.MAGIC + head + wire._tag(EDGE_SECRET, kind, head, body) + body


FRAMES = {
    "garbage": (b"\x00\xffnot a frame at all", wire.R_BAD_FRAME),
    "empty": (b"", wire.R_BAD_FRAME),
    "truncated header": (wire.MAGIC + b"\x03\x09edge", wire.R_BAD_FRAME),
    "edge id with a bar": (wire.MAGIC + b"\x03\x03a|b" + bytes(wire.NONCE_BYTES + wire.TAG_BYTES) + b"\x80",
                           wire.R_BAD_FRAME),
    "a future version": (b"FOG9" + bytes(60), wire.R_BAD_VERSION),
    "unknown edge": (wire.batch_frame("edge-nobody", EDGE_SECRET, _one_row()), wire.R_UNKNOWN_EDGE),
    "wrong secret": (wire.batch_frame(EDGE_ID, "not-the-secret", _one_row()), wire.R_BAD_TAG),
    "a heartbeat on the data port": (wire.heartbeat(EDGE_ID, EDGE_SECRET), wire.R_WRONG_KIND),
    "the cloud's reply sent back in": (wire.reply_frame(EDGE_ID, EDGE_SECRET, bytes(16), ["80331"], [""]),
                                       wire.R_WRONG_KIND),
    "unknown kind": (wire.MAGIC + b"\x09" + bytes(60), wire.R_WRONG_KIND),
    "tagged for the other direction": (_tagged_as(wire.batch_frame(EDGE_ID, EDGE_SECRET, _one_row()),
                                                  wire.KIND_REPLY), wire.R_BAD_TAG),
    "body not msgpack": (_raw(wire.KIND_BATCH, b"\xc1\xc1"), wire.R_BAD_BODY),
    "body a list": (_batch([1, 2]), wire.R_BAD_BODY),
    "missing column": (_batch({k: v for k, v in _columns().items() if k != "avg"}), wire.R_BAD_BODY),
    "string power": (_batch(_columns(avg=["12.5"])), wire.R_BAD_BODY),
    "float id": (_batch(_columns(id=[1.0])), wire.R_BAD_BODY),
    "negative id": (_batch(_columns(id=[-1])), wire.R_BAD_BODY),
    "id beyond a database's": (_batch(_columns(id=[2**63])), wire.R_BAD_BODY),
    "edge id of dots alone": (wire.MAGIC + b"\x03\x02.." + bytes(wire.NONCE_BYTES + wire.TAG_BYTES) + b"\x80",
                              wire.R_BAD_FRAME),
    "columns of unequal length": (_batch(_columns(id=[1, 2])), wire.R_BAD_BODY),
    "empty batch": (wire.batch_frame(EDGE_ID, EDGE_SECRET, []), wire.R_EMPTY),
    "too many tuples": (_batch({name: [value[0]] * (wire.MAX_BATCH_TUPLES + 1) for name, value in _columns().items()}),
                        wire.R_TOO_MANY),
}

# Frames on the heartbeat port: each refused, the edge's record untouched.
HEARTBEATS = {
    "wrong secret": (wire.heartbeat(EDGE_ID, "wrong"), wire.R_BAD_TAG),
    "a minute old": (wire.heartbeat(EDGE_ID, EDGE_SECRET, now_ms=1), wire.R_STALE),
    "time a string": (wire.seal(wire.KIND_HEARTBEAT, EDGE_ID, EDGE_SECRET, {"ts": "now", "backlog": 1}),
                      wire.R_BAD_BODY),
    "a batch on the heartbeat port": (wire.batch_frame(EDGE_ID, EDGE_SECRET, _one_row()), wire.R_WRONG_KIND),
    "the cloud's answer sent back in": (wire.heartbeat_reply(EDGE_ID, EDGE_SECRET, bytes(16)), wire.R_WRONG_KIND),
    "oversized": (wire.MAGIC + bytes((wire.KIND_HEARTBEAT,)) + bytes(wire.MAX_HEARTBEAT_BYTES), wire.R_TOO_LARGE),
}

V2_TUPLES = {
    "nan": ((7, "h", T0, T0 + 5000, math.nan, 3), wire.R_NOT_FINITE),
    "inf": ((7, "h", T0, T0 + 5000, math.inf, 3), wire.R_NOT_FINITE),
    "negative power": ((7, "h", T0, T0 + 5000, -1.0, 3), wire.R_NEGATIVE),
    "far future": ((7, "h", 4_102_444_800_000, 4_102_444_805_000, 1.0, 3), wire.R_FUTURE),
    "end before start": ((7, "h", T0, T0 - 5000, 1.0, 3), wire.R_BAD_WINDOW),
    "seconds not ms": ((7, "h", T0 // 1000, T0 // 1000 + 5, 1.0, 3), wire.R_BAD_WINDOW),
    "no readings": ((7, "h", T0, T0 + 5000, 1.0, 0), wire.R_BAD_COUNT),
    "more readings than milliseconds": ((8, "h", T0, T0 + 5000, 1.0, 5001), wire.R_BAD_COUNT),
    "a count past 64 bits": ((9, "h", T0, T0 + 5000, 1.0, 2**64 - 1), wire.R_BAD_COUNT),
    "empty household": ((7, "", T0, T0 + 5000, 1.0, 3), wire.R_BAD_HOUSEHOLD),
    # Issue 12, findings 4 and 5.
    "1e308": ((7, "h", T0, T0 + 5000, 1e308, 3), wire.R_TOO_POWERFUL),
    "1e308 again in the same state": ((8, "h", T0 + 5000, T0 + 10000, 1e308, 3), wire.R_TOO_POWERFUL),
    "above a house connection": ((7, "h", T0, T0 + 5000, 43_470.5, 3), wire.R_TOO_POWERFUL),
    "household with a bar": ((7, "a|b", T0, T0 + 5000, 1.0, 3), wire.R_BAD_HOUSEHOLD),
    "window longer than an hour": ((7, "h", T0, T0 + 3_600_001, 1.0, 3), wire.R_BAD_WINDOW),
}

# Tuples the cloud's store refuses by who sends them (finding 4): (rows of the first edge, rows of a second
# edge with its own secret, the second edge's reasons).
STORE_REFUSALS = {
    "a household another edge owns": ([(1, "owned", T0, T0 + 5000, 1.0, 1)],
                                      [(1, "owned", T0 + 5000, T0 + 10000, 40_000.0, 1)], [wire.R_NOT_OWNER]),
}

# Query strings the API must answer with 200 or 400, never 500 (finding 10).
API_QUERIES = {
    "/api/households/?page=99999999999999999999": 400,
    "/api/households/?page=" + "9" * 5000: 400,
    "/api/households/?page=1000000000": 200,
    "/api/households/?page=-1": 400,
    "/api/households/?page=1.5": 400,
    "/api/households/?page=%00": 400,
    "/api/households/?page_size=500&page=2": 200,
    "/api/households/?page_size=501": 400,
    "/api/households/?page_size=": 400,
    "/api/tuples/recent/?limit=1e3": 400,
    "/api/tuples/recent/?limit=99999999999999999999999": 400,
    "/api/states/?page=abc": 200,
}

LEGACY_V1 = {
    "not JSON": (b"average=3", b"ERROR: bad-body"),
    "a JSON list": (b"[1, 2, 3]", b"ERROR: bad-body"),
    "id a string": (b'{"id": "x", "node_id": "h", "average": 1}', b"ERROR: bad-body"),
    "average NaN": (b'{"id": 1, "node_id": "h", "average": NaN}', b"ERROR: not-finite"),
    "average negative": (b'{"id": 1, "node_id": "h", "average": -2.5}', b"ERROR: negative-power"),
    "node_id missing": (b'{"id": 1, "average": 2.5}', b"ERROR: bad-household"),
    "average 1e308": (b'{"id": 1, "node_id": "h", "average": 1e308}', b"ERROR: implausible-power"),
    "node_id with a bar": (b'{"id": 1, "node_id": "a|b", "average": 2.5}', b"ERROR: bad-household"),
    "node_id of a megabyte": (json.dumps({"id": 1, "node_id": "x" * 1_000_000, "average": 1.0}).encode(),
                              b"ERROR: bad-household"),
    "id beyond 64 bits": (json.dumps({"id": 2**70, "node_id": "h", "average": 1.0}).encode(), b"ERROR: bad-body"),
    "average twice": (b'{"id": 1, "node_id": "h", "average": 1.0, "average": 2.0}', b"ERROR: bad-body"),
    "node_id twice, once spelled with an escape": (b'{"id": 1, "node_id": "h", "node_\\u0069d": "g", "average": 1}',
                                                   b"ERROR: bad-body"),
}

CSV_LINES = {
    "too few fields": ("2019-12-24 00:00:05,0,1,2", "expected 7 fields, found 4"),
    "foreign date": ("24.12.2019 00:00:05,0,1,200,1,1,1", "bad date"),
    "power a word": ("2019-12-24 00:00:05,0,1,lots,1,1,1", "bad power 'lots'"),
    "power with a digit separator": ("2019-12-24 00:00:05,0,1,249_050,1,1,1", "bad power '249_050'"),
    "power in Arabic-Indic digits": ("2019-12-24 00:00:05,0,1,\u0662\u0664\u0669,1,1,1", "bad power"),
    "power negative": ("2019-12-24 00:00:05,0,1,-5,1,1,1", "is negative"),
    "power nan": ("2019-12-24 00:00:05,0,1,nan,1,1,1", "is not finite"),
    "power infinite": ("2019-12-24 00:00:05,0,1,1e400,1,1,1", "is not finite"),
    "date with an offset": ("2019-12-24 00:00:05+05:00,0,1,200,1,1,1", "bad date"),
    "date alone": ("2019-12-24,0,1,200,1,1,1", "bad date"),
    "date in other digits": ("2019-12-24 00:00:\u0660\u0665,0,1,200,1,1,1", "bad date"),
    "date that never happened": ("2019-03-31 02:30:00,0,1,200,1,1,1", "never happened in Europe/Berlin"),
    "date before 2000": ("1970-01-01 01:00:00,0,1,200,1,1,1", "before 2000"),
    "date far ahead": ("2091-12-24 00:00:05,0,1,200,1,1,1", "h from now"),
    "line too long": ("2019-12-24 00:00:05,0,1,200,1,1," + "1" * 5000, "longer than 4096 bytes"),
    "power above a house connection": ("2019-12-24 00:00:05,0,1,43470001,1,1,1", "above one household"),
    "time going back": ("2019-12-24 00:00:01,0,1,200,1,1,1", "does not come after the line before"),
    "model line again": ("household", "the header lines again"),
    "model line again as padded": ("household,,,,,,", "the header lines again"),
    "model line again after a BOM": ("\ufeffhousehold", "the header lines again"),  # a "UTF-8 CSV" appended
    "column line again": ("date,timestamp,energy,power,power1,power2,power3", "the header lines again"),
}

GEM_HEADER = "household\ndate,timestamp,energy,power,power1,power2,power3\n"

CSV_FILES = {
    "empty file": ("", "an empty file: no header lines, no readings"),
    "blank lines only": ("\n \r\n\n", "an empty file: no header lines, no readings"),
    "no model line": ("date,timestamp,energy,power,power1,power2,power3\n2019-12-24 00:00:01,0,1,2,3,4,5\n",
                      "expected the two header lines"),
    "headers only": (GEM_HEADER, "no readings after the two header lines"),
}

SIZE = sum(map(len, (KAFKA_MESSAGES, BATCH_READINGS, FRAMES, HEARTBEATS, V2_TUPLES, LEGACY_V1, CSV_LINES, CSV_FILES,
                     STORE_REFUSALS, API_QUERIES)))
