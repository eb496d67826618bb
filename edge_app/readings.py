"""What a Kafka message holds: one reading, or a batch of them, each checked against fogwire.limits.

A message is one reading, `{"household", "ts", "power_w"}`, or a batch,
`{"readings": [[household, ts, power_w], ...]}` (READINGS_FIELD), as the
simulation sends by default: one Kafka record, one parse and one delivery for
many readings (`bench ingest` measures both on the same readings). A
reading that is not within fogwire.limits (longer than MAX_READING_BYTES,
not JSON, any exception while parsing it, a value out of bounds) is
malformed. A batch's readings are checked one by one: a bad one is set aside
and the rest of its batch kept; a batch that cannot be read at all (not
JSON, over MAX_MESSAGE_BYTES or MAX_READINGS_PER_MESSAGE, empty, or with a
single reading's fields beside its own) is malformed as a whole. Nothing here
raises anything but MalformedReading, whatever the bytes.

A message whose object gives a name the edge reads twice (two "readings"
lists, two "power_w") is malformed as a whole too: JSON leaves which one
counts to the parser (orjson and json take the last, others the first or
refuse), so the edge would have taken one batch and dropped the other
unseen. It is set aside whole, with what is wrong with it (edge_app/ingest.py).

The original prototype's messages (`--legacy-input`) are single readings
with no time of their own: parse_reading with the record's timestamp.
"""

import json

import orjson

from fogwire import limits
from fogwire.jsonnames import repeated_names

# orjson parses a reading in a fraction of json's time (the largest share of the ingest's profile);
# `bench ingest` measures the two on the same readings by setting this to json.loads. What orjson
# refuses goes to json.loads before it is called malformed: json also reads bytes with a BOM or in
# UTF-16/32, which readings accepted before orjson came in must still be.
loads = orjson.loads
# json.loads turns an integer literal into an int digit by digit, and refuses one past 4,300 digits, which lost
# the good readings of the batch beside it: one longer than any 64-bit integer is kept as its digits, and refused.
MAX_INTEGER_DIGITS = 20
BATCH_MARK = f'"{limits.READINGS_FIELD}"'.encode()  # a message without it is no batch: longer than a reading, refused unparsed
SINGLE_FIELDS = ("household", "ts", "power_w")
LEGACY_FIELDS = ("node_id", "power_value")  # the prototype's message (--legacy-input)
BATCH_FIELDS = (limits.READINGS_FIELD,)  # a batch with a reading's fields beside it is refused for having them
# A single reading's, and the batch's: two "readings" of which orjson kept a last null made a reading of the message
# (with the fields beside them), and dropped the batch.
READING_FIELDS = (*BATCH_FIELDS, *SINGLE_FIELDS)
# A name given twice is found by counting its quoted form in the raw bytes, a scan that costs next to nothing beside
# the parse. Only a \u escape can spell one of these names otherwise, which the count cannot see: a message with one
# is looked at the exact (slow) way, as is one in another encoding than UTF-8 or in which a name counts twice (the
# second may be a string's value: only the outermost object's names count). A search for the one byte of a
# backslash is a memchr(), and none of the simulation's messages has one; one for the two of "\u" costs more than
# the count itself, so it is made only then.
ESCAPE_MARK = b"\\"
UNICODE_ESCAPE_MARK = b"\\u"
# Each set of names a caller checks (_given_once), quoted as the bytes give them.
NAME_MARKS = {names: tuple(f'"{name}"'.encode() for name in names) for names in (BATCH_FIELDS, READING_FIELDS,
                                                                                   LEGACY_FIELDS)}


class MalformedReading(ValueError):
    pass


class _LongInteger:
    """An integer literal of more than MAX_INTEGER_DIGITS digits: no field takes it (not a str: a household id
    of digits would pass for one)."""

    __slots__ = ("digits",)

    def __init__(self, literal):
        self.digits = len(literal.lstrip("-"))


def _integer(literal):
    return int(literal) if len(literal) <= MAX_INTEGER_DIGITS else _LongInteger(literal)


def _kind(value):
    """What a field's value is, for a message: its type's name, or what a long integer was."""
    return f"an integer of {value.digits} digits" if type(value) is _LongInteger else type(value).__name__


def _unreadable(exc):
    return f"unreadable ({type(exc).__name__}: {str(exc)[:80]})"


def parse_reading(raw, now_ms, legacy_ts=None):
    """(household, ts, power_w) of one Kafka message value, or MalformedReading saying what is wrong.

    With `legacy_ts`, the value is one of the original prototype's messages,
    `{"node_id": str, "power_value": number}` with no key and no time of its
    own, and `legacy_ts` (the Kafka record's timestamp) is its event time.

    Any exception on the way (a recursion limit, an integer too large for a
    float, ...) is a MalformedReading too: no message may stop the loop.
    """
    try:
        return _parse_reading(raw, now_ms) if legacy_ts is None else _parse_legacy_reading(raw, legacy_ts, now_ms)
    except MalformedReading:
        raise
    except Exception as exc:
        raise MalformedReading(_unreadable(exc)) from None


def parse_message(raw, now_ms, legacy_ts=None):
    """([(household, ts, power_w), ...], [(index, problem), ...]) of one Kafka message value: its readings, and
    those of a batch that were set aside, each with its place in the batch and what is wrong with it.
    MalformedReading when nothing of the message can be used."""
    if legacy_ts is not None or (raw is not None and len(raw) > limits.MAX_READING_BYTES
                                 and BATCH_MARK not in raw):  # too long for a reading, and no batch: unparsed
        return [parse_reading(raw, now_ms, legacy_ts)], ()
    try:
        message = _json_object(raw, limits.MAX_MESSAGE_BYTES)
        batch = message.get(limits.READINGS_FIELD)
        if batch is None:
            if len(raw) > limits.MAX_READING_BYTES:
                raise MalformedReading(f"{len(raw)} bytes, more than a reading's {limits.MAX_READING_BYTES}")
            _given_once(raw, READING_FIELDS)
            return [_reading(message, now_ms)], ()
        _given_once(raw, BATCH_FIELDS)
    except MalformedReading:
        raise
    except Exception as exc:
        raise MalformedReading(_unreadable(exc)) from None
    if type(batch) is not list:
        raise MalformedReading(f"'{limits.READINGS_FIELD}' must be a list of [household, ts, power_w], "
                               f"got {_kind(batch)}")
    if not batch:
        raise MalformedReading("a batch of no readings")
    if len(batch) > limits.MAX_READINGS_PER_MESSAGE:
        raise MalformedReading(f"a batch of {len(batch)} readings, more than {limits.MAX_READINGS_PER_MESSAGE}")
    if any(field in message for field in SINGLE_FIELDS):  # a reading with a batch in it, or the other way round
        raise MalformedReading(f"both a batch ('{limits.READINGS_FIELD}') and a reading's fields ({', '.join(SINGLE_FIELDS)})")
    readings, problems = [], []
    keep, household_ok = readings.append, limits.HOUSEHOLD_ID_RE.fullmatch
    earliest, latest, most = limits.EARLIEST_MS, now_ms + limits.FUTURE_SLACK_MS, limits.MAX_POWER_W
    for index, item in enumerate(batch):
        # A good reading passes every check of _checked in this one test (NaN and infinities fail the range), at a
        # fraction of the cost of its calls: the readings of a batch are most of the ingest's work. Whatever fails
        # it takes the long way, which says what is wrong.
        if type(item) is list and len(item) == 3:
            household, ts, power = item
            if (type(ts) is int and earliest <= ts <= latest and (type(power) is float or type(power) is int)
                    and 0 <= power <= most and type(household) is str and household_ok(household)):
                keep((household, ts, float(power)))
                continue
        try:
            if type(item) is not list or len(item) != 3:
                raise MalformedReading("not a [household, ts, power_w] list")
            readings.append(_checked(*item, now_ms))
        except MalformedReading as exc:
            problems.append((index, str(exc)))
        except Exception as exc:  # noqa: BLE001 -- as in parse_reading: no value may stop the loop
            problems.append((index, _unreadable(exc)))
    return readings, problems


def _json_object(raw, max_bytes=limits.MAX_READING_BYTES):
    if raw is None:
        raise MalformedReading("no value (a tombstone)")
    if len(raw) > max_bytes:
        what = "a reading's" if max_bytes == limits.MAX_READING_BYTES else "a message's"
        raise MalformedReading(f"{len(raw)} bytes, more than {what} {max_bytes}")
    try:
        message = loads(raw)
    except Exception:  # noqa: BLE001 -- orjson's refusal is only a first opinion
        try:
            message = json.loads(_text(raw), parse_int=_integer)
        except Exception as exc:  # whatever the parser raises (RecursionError too), the message is unusable
            raise MalformedReading(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise MalformedReading(f"not a JSON object but a {type(message).__name__}")
    return message


def _given_once(raw, names):
    """MalformedReading if the outermost object of `raw` (parsed: a JSON object) gives one of `names` (those the
    caller reads) more than once."""
    if not _may_repeat(raw, names):
        return
    try:
        repeated = repeated_names(_text(raw), parse_int=_integer)
    except RecursionError:  # orjson reads deeper than json: the names can't be told, so neither can the readings
        raise MalformedReading("nested too deep for json to tell whether a name comes twice") from None
    for name in names:
        if name in repeated:
            raise MalformedReading(f"the name '{name}' twice in the message's object: JSON leaves which one counts "
                                   "to the parser, so neither is taken")


def _may_repeat(raw, names):
    """Whether the outermost object of `raw` may give one of `names` twice: False only where counting the quoted
    names in the bytes is sure to tell. That is UTF-8 bytes (UTF-16 and 32 have NUL bytes, which UTF-8 JSON
    can't) with no \\u escape (which could spell a name), in which each is found once at most."""
    if not isinstance(raw, (bytes, bytearray)) or b"\x00" in raw or (ESCAPE_MARK in raw and UNICODE_ESCAPE_MARK in raw):
        return True
    count = raw.count  # a loop, not any() over a generator: a single reading's check is most of its own cost
    for mark in NAME_MARKS[names]:
        if count(mark) > 1:
            return True
    return False


def _text(raw):
    """The message as json.loads reads it: bytes not UTF-8 in a UTF-8 message are kept as lone surrogates, which
    no household id takes, so such bytes in one reading's id set that reading aside, not its batch (in a field
    the edge does not read they go unread with it, as orjson would read a message whose bytes are all UTF-8).
    Bytes in another encoding (UTF-16/32) are json's to tell, as before."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        encoding = json.detect_encoding(bytes(raw[:4]))
        if encoding in ("utf-8", "utf-8-sig"):  # the second drops the BOM
            return bytes(raw).decode(encoding, "surrogateescape")
    return raw


def _parse_reading(raw, now_ms):
    message = _json_object(raw)
    _given_once(raw, READING_FIELDS)
    return _reading(message, now_ms)


def _reading(message, now_ms):
    household = message.get("household")
    if household is None and "node_id" in message:  # the operator's mistake says how to mend it, every time
        raise MalformedReading("a message of the original prototype (node_id, power_value): an edge reads such a "
                               "topic with `runedge --legacy-input`")
    return _checked(household, message.get("ts"), message.get("power_w"), now_ms)


def _checked(household, ts, power, now_ms):
    if type(ts) is not int:
        raise MalformedReading(f"'ts' must be an integer (epoch ms), got {_kind(ts)}")
    if type(power) not in (int, float):
        raise MalformedReading(f"'power_w' must be a number, got {_kind(power)}")
    problem = limits.reading_problem(household, ts, power, now_ms)
    if problem:
        raise MalformedReading(problem)
    return household, ts, float(power)


def _parse_legacy_reading(raw, timestamp_ms, now_ms):
    message = _json_object(raw)
    _given_once(raw, LEGACY_FIELDS)
    if timestamp_ms < 0:  # confluent-kafka (and kafka_source for kafka-python) give -1 for none
        raise MalformedReading("prototype message in a record without a timestamp: it has no time of its own")
    node, power = (message.get(name) for name in LEGACY_FIELDS)
    if node is None and ("household" in message or limits.READINGS_FIELD in message):
        raise MalformedReading("a message of this pipeline's own format (household, ts, power_w, or a batch of "
                               "readings), not the prototype's: such a topic is read without --legacy-input")
    if type(power) not in (int, float):
        raise MalformedReading(f"'power_value' must be a number, got {_kind(power)}")
    problem = limits.reading_problem(node, timestamp_ms, power, now_ms)
    if problem:
        raise MalformedReading(f"prototype message (node_id, power_value, record time): {problem}")
    return node, timestamp_ms, float(power)
