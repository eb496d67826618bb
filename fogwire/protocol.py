"""The wire protocol between edge and cloud, shared by both and owned by neither.

v3 frame (every frame, both directions)::

    b"FOG3" | u8 kind | u8 len(edge id) | edge id (ascii) | nonce (16 bytes) | tag (32 bytes) | body

    tag = HMAC-SHA256(edge's secret, b"fog3" | direction | kind | len | edge id | nonce | body)

    kind  direction       sent by  max bytes         nonce                 body (MessagePack map)
    1     edge>cloud      edge     MAX_HEARTBEAT     fresh, random         {"ts": ms, "backlog": n, [optional state],
                                                                             ["probe": [[id, hh, ws, we], ...]]}
    2     cloud>edge      cloud    MAX_HEARTBEAT     the heartbeat's       {"ts": ms, ["store": id],
                                                                             ["held": [bool per probe]]}
    3     edge>cloud      edge     MAX_DATA          fresh, random         columns {"id","hh","ws","we","avg","n"}
    4     cloud>edge      cloud    MAX_REPLY         the batch's           {"plz": [...], "why": [...]} per tuple
    5     cloud>edge      cloud    MAX_REPLY         the request's         {"reason", "detail"}; tag zero if the
                                                     (zeros if unreadable)   request could not be authenticated

What each part stops:

- The tag covers everything after the magic, so the cloud looks the secret
  up by edge id and verifies before it decodes a byte of the body.
- A heartbeat may carry further edge state (HEARTBEAT_STATE: `backlog`,
  `paused`); the cloud keeps the known fields of the right type and ignores
  the rest, so an older cloud takes a newer edge's heartbeat.
- A heartbeat may name up to MAX_PROBES tuples the cloud acknowledged
  (`probe`); the reply says which of them its store holds (`held`), so an
  edge notices a store that lost part of what it acknowledged while keeping
  its identity (restored from an older copy, a replica promoted before it
  had everything). A probe that is not well formed is not answered.
- The direction label and the kind are inside the tag, so no frame is
  valid in the other direction or as another kind: a heartbeat bounced
  back is not the cloud's answer, a reply sent in is not a heartbeat.
- A reply carries, under its tag, the nonce of the request it answers, and
  the edge takes only the reply to the request it sent on that context:
  an earlier genuine reply replayed in place of a later one is refused.
- A heartbeat's `ts` must be within HEARTBEAT_SKEW_MS of the cloud's clock
  and its nonce new (ReplayGuard), so a recorded heartbeat can't hide an outage.
- Each kind has a size limit (MAX_FRAME_BYTES), checked on the length
  before anything is parsed (and, on the sockets, by nng's recv_max_size
  before a message is buffered); a batch holds at most MAX_BATCH_TUPLES,
  which bounds the reply.
- An error frame whose tag does not verify may come from anyone: the edge
  treats it as transient (a short pause), never as a reason to back off.
- A v2 edge (b"FOG2") gets a v2 error frame, reason `bad-version`, that
  tells its operator to upgrade.

The body is MessagePack, and a batch is *columnar* (one list per field):
one short list per field encodes, decodes and travels smaller than a dict
per row, and makes strict validation cheap: a few length and type checks
per list instead of per-row dict checks.

Every value a tuple carries is checked against fogwire.limits, the limits
the simulation and the edge's ingest use too (`refusals`); legacy v1 values too.

Legacy v1 (the original prototype, opt-in on the cloud, no authentication
at all): b"heartbeat" -> b"ack"; JSON {"id", "node_id", "average"} ->
b"PLZ for id: <id> - PLZ: <plz>".

This module imports neither edge_app nor cloud_app (nor Django).
"""

import hashlib
import hmac
import json
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

import msgpack

from fogwire import limits
from fogwire.jsonnames import repeated_names
from fogwire.limits import (MAX_HOUSEHOLD_ID, R_BAD_COUNT, R_BAD_HOUSEHOLD, R_BAD_WINDOW, R_FUTURE,  # noqa: F401
                            R_NEGATIVE, R_NOT_FINITE, R_TOO_POWERFUL)

VERSION = 3
MAGIC = b"FOG3"
MAGIC_V2 = b"FOG2"
NONCE_BYTES = 16
TAG_BYTES = 32
NO_TAG = bytes(TAG_BYTES)
NO_NONCE = bytes(NONCE_BYTES)
MAX_EDGE_ID = 64

KIND_HEARTBEAT = 1
KIND_HEARTBEAT_REPLY = 2
KIND_BATCH = 3
KIND_REPLY = 4
KIND_ERROR = 5
REQUESTS = {KIND_HEARTBEAT, KIND_BATCH}
# The direction is part of what the tag covers: a frame is valid one way only.
DIRECTION = {KIND_HEARTBEAT: b"edge>cloud", KIND_BATCH: b"edge>cloud",
             KIND_HEARTBEAT_REPLY: b"cloud>edge", KIND_REPLY: b"cloud>edge", KIND_ERROR: b"cloud>edge"}
ANSWERS = {KIND_HEARTBEAT: KIND_HEARTBEAT_REPLY, KIND_BATCH: KIND_REPLY}

# Size limits per kind, checked on the length before anything is parsed.
MAX_BATCH_TUPLES = 5000
MAX_DATA_BYTES = 2 * 1024 * 1024  # 5000 tuples with 128-character household ids fit with room to spare
MAX_HEARTBEAT_BYTES = 4 * 1024
MAX_REPLY_BYTES = 256 * 1024  # a reply to MAX_BATCH_TUPLES: a postal code and a reason word each
MAX_FRAME_BYTES = {KIND_HEARTBEAT: MAX_HEARTBEAT_BYTES, KIND_HEARTBEAT_REPLY: MAX_HEARTBEAT_BYTES,
                   KIND_BATCH: MAX_DATA_BYTES, KIND_REPLY: MAX_REPLY_BYTES, KIND_ERROR: MAX_REPLY_BYTES}
HEARTBEAT_SKEW_MS = 30_000  # a heartbeat's clock may differ from the cloud's by this much
# Optional edge state a heartbeat may carry, with its type; the cloud stores the known ones.
HEARTBEAT_STATE = {"backlog": int, "paused": bool}
MAX_PROBES = 4  # acknowledged tuples a heartbeat may ask about: each costs the cloud one hash lookup
MAX_REASON = 64  # characters of a refusal reason kept (the edge stores it in a field of this size)
MAX_DETAIL = 200  # characters of a refusal's detail sent back or logged (input is echoed cut short)
# An error frame's body as a cloud writes it: its reason and detail, at most 4 bytes a character, and their keys.
# One longer is no cloud's, and if untagged is not decoded: its objects would take many times its bytes.
MAX_ERROR_BODY = 4 * (MAX_REASON + MAX_DETAIL) + 32
TUPLE_ID_END = 2**63  # a tuple's id is in 0..TUPLE_ID_END-1: the edge's database key, a signed 64-bit integer
V1_FIELDS = ("id", "node_id", "average")  # what a v1 data request gives, each once

# Reasons are stable words: the edge logs and counts them, metrics label by them.
R_BAD_FRAME = "bad-frame"
R_TOO_LARGE = "too-large"
R_BAD_VERSION = "bad-version"
R_WRONG_KIND = "wrong-kind"
R_UNKNOWN_EDGE = "unknown-edge"
R_BAD_TAG = "bad-tag"
R_STALE = "stale-heartbeat"
R_REPLAYED = "replayed"
R_NOT_THE_REPLY = "not-the-reply"
R_BAD_BODY = "bad-body"
R_EMPTY = "empty-batch"
R_TOO_MANY = "too-many-tuples"
R_DUPLICATE_ID = "duplicate-id"
# Refused by the cloud's store (ownership and quota are checked where they are kept).
R_NOT_OWNER = "household-of-another-edge"  # another edge delivered this household first
R_QUOTA = "household-quota"  # the edge already owns as many households as FOG_CLOUD_HOUSEHOLDS_PER_EDGE allows
R_SUM_NOT_FINITE = "sum-not-finite"  # the batch would make a running sum infinite: nothing of it stored
# The cloud holds this household's window from the edge already, with another average or count (an edge
# database begun again and filled from a replay Kafka had trimmed, or a bug): the first stays, and this one is not
# acknowledged as stored, since it is not.
R_CONFLICT = "window-stored-otherwise"
R_STORE_DOWN = "store-unavailable"  # the cloud's store is down: nothing wrong with the data, send again soon
R_INTERNAL = "internal-error"
TRANSIENT = {R_STORE_DOWN, R_INTERNAL}
# Refusals an edge sends again after a backoff, never sets aside: a window over a day in the cloud's future was
# fine on the edge's clock against the same bound, so a clock is wrong (a host before its first time sync).
RETRIED = {R_FUTURE}

BATCH_COLUMNS = ("id", "hh", "ws", "we", "avg", "n")

LEGACY_HEARTBEAT = b"heartbeat"
LEGACY_ACK = b"ack"
POSTAL_CODE_RE = re.compile(r"[0-9]{5}")  # fullmatch: "$" also matches before a final newline
# Edge ids become parts of storage keys and records: a plain alphabet only.
ID_ALPHABET = "A-Za-z0-9._-"  # of the ids below, as a regex character class's inside
# Not dots alone: "." and ".." in a URL's path (the dashboard's /api/edges/<edge>/history/) name another one.
EDGE_ID_RE = re.compile(rf"(?!\.+$)[{ID_ALPHABET}]{{1,{MAX_EDGE_ID}}}")  # fullmatch, as POSTAL_CODE_RE
EDGE_ID_EXPECTED = f"1..{MAX_EDGE_ID} characters of A-Z a-z 0-9 . _ -, not dots alone"
MAX_STORE_ID = 64  # characters of a cloud store's identity in a heartbeat reply (EdgeStatus.cloud_store)
STORE_ID_RE = re.compile(rf"[{ID_ALPHABET}]{{1,{MAX_STORE_ID}}}")  # fullmatch, as POSTAL_CODE_RE


class ProtocolError(ValueError):
    """A frame that can't be used at all. `reason` is one of the R_* words.

    `trusted` is True only for an error reply whose tag verified: the cloud
    itself said so. Anything else may come from anyone on the path.
    """

    edge = None  # on the cloud: the edge whose tag verified, for a body that then could not be read

    def __init__(self, reason, detail, trusted=False):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.trusted = trusted


@dataclass
class Batch:
    """Tuples of one data request, as columns (index i is one tuple)."""

    edge: str
    ids: list
    households: list
    starts: list
    ends: list
    averages: list
    counts: list

    def __len__(self):
        return len(self.ids)


@dataclass
class Frame:
    kind: int
    edge: str
    nonce: bytes
    tag: bytes
    body: bytes
    head: bytes  # kind, edge id and nonce: covered by the tag with the body


def _secret_bytes(secret):
    return secret.encode() if isinstance(secret, str) else secret


def _tag(secret, kind, head, body):
    mac = hmac.new(_secret_bytes(secret), b"fog3" + DIRECTION[kind] + head, hashlib.sha256)
    mac.update(body)  # no copy of a large body
    return mac.digest()


def seal(kind, edge_id, secret, payload, nonce=None):
    """Encode `payload` into a v3 frame of `kind` for or from `edge_id`; untagged if `secret` is None.

    A request gets a fresh random nonce; a reply passes the request's.
    """
    if not EDGE_ID_RE.fullmatch(edge_id):
        raise ValueError(f"edge id {edge_id!r} must be {EDGE_ID_EXPECTED}")
    edge_bytes = edge_id.encode()
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    body = msgpack.packb(payload, use_bin_type=True)
    head = bytes((kind, len(edge_bytes))) + edge_bytes + nonce
    tag = _tag(secret, kind, head, body) if secret else NO_TAG
    frame = b"".join((MAGIC, head, tag, body))
    if len(frame) > MAX_FRAME_BYTES[kind]:
        raise ValueError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES[kind]}-byte limit of its kind")
    return frame


def split(frame, kinds=None):
    """The parts of a v3 frame, checking its length (against its kind's limit) and framing only."""
    if len(frame) < 6 or frame[:3] != MAGIC[:3]:
        raise ProtocolError(R_BAD_FRAME, f"frame of {len(frame)} bytes does not start with {MAGIC!r}")
    if frame[:4] != MAGIC:
        hint = "; upgrade the edge to protocol v3" if frame[:4] == MAGIC_V2 else ""
        raise ProtocolError(R_BAD_VERSION, f"protocol {frame[:4]!r}, this side speaks {MAGIC!r}{hint}")
    kind, size = frame[4], frame[5]
    if kind not in DIRECTION or (kinds is not None and kind not in kinds):
        raise ProtocolError(R_WRONG_KIND, f"frame kind {kind} is not expected here")
    if len(frame) > MAX_FRAME_BYTES[kind]:
        raise ProtocolError(R_TOO_LARGE, f"frame of {len(frame)} bytes exceeds the "
                                         f"{MAX_FRAME_BYTES[kind]}-byte limit of kind {kind}")
    head_end = 6 + size + NONCE_BYTES
    if size == 0 or size > MAX_EDGE_ID or len(frame) < head_end + TAG_BYTES:
        raise ProtocolError(R_BAD_FRAME, f"truncated header in a frame of {len(frame)} bytes")
    edge = frame[6 : 6 + size].decode("ascii", errors="replace")
    if not EDGE_ID_RE.fullmatch(edge):
        raise ProtocolError(R_BAD_FRAME, f"edge id is not {EDGE_ID_EXPECTED}")
    return Frame(kind, edge, frame[6 + size : head_end], frame[head_end : head_end + TAG_BYTES],
                 frame[head_end + TAG_BYTES :], frame[4:head_end])


def _verified(parts, secret):
    return secret is not None and hmac.compare_digest(parts.tag, _tag(secret, parts.kind, parts.head, parts.body))


def _decode(body):
    try:
        payload = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(R_BAD_BODY, f"body is not MessagePack ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise ProtocolError(R_BAD_BODY, f"body is a {type(payload).__name__}, not a map")
    return payload


def open_request(frame, secret_for, kind):
    """Verify and decode a request of `kind` on the cloud. `secret_for(edge_id)` returns the secret or None.

    Returns (edge id, nonce, payload). The body is decoded only after its tag
    checks out, so nothing an unknown sender writes is ever parsed.
    """
    parts = split(frame, (kind,))
    secret = secret_for(parts.edge)
    if secret is None:
        raise ProtocolError(R_UNKNOWN_EDGE, f"edge {parts.edge!r} is not known here")
    if not _verified(parts, secret):
        raise ProtocolError(R_BAD_TAG, f"authentication tag does not match for edge {parts.edge!r}")
    try:
        return parts.edge, parts.nonce, _decode(parts.body)
    except ProtocolError as exc:
        exc.edge = parts.edge  # the tag held: the cloud may tag its answer, so the edge acts on it
        raise


def open_reply(reply, request, secret, kind):
    """The payload of the cloud's `kind` reply to `request` (a frame this edge sent).

    Only a reply tagged with the edge's secret that names this request's
    nonce is taken. An error reply raises ProtocolError with the cloud's
    reason, `trusted` only if it is tagged and names the request.
    """
    sent = split(request, REQUESTS)
    parts = split(reply, (ANSWERS[sent.kind], KIND_ERROR))
    if parts.edge != sent.edge:
        raise ProtocolError(R_BAD_TAG, f"reply is addressed to edge {parts.edge!r}, not {sent.edge!r}")
    if parts.kind == KIND_ERROR:
        trusted = _verified(parts, secret) and parts.nonce == sent.nonce
        reason, detail = _error_fields(parts, trusted)
        raise ProtocolError(reason, f"cloud refused the request: {detail}", trusted=trusted)
    if not _verified(parts, secret):
        raise ProtocolError(R_BAD_TAG, f"reply is not tagged with edge {sent.edge!r}'s secret")
    if parts.nonce != sent.nonce:
        raise ProtocolError(R_NOT_THE_REPLY, "a genuine reply, but to another request (replayed?)")
    return _decode(parts.body)


def read_error(reply):
    """(reason, detail) of an error frame, cut short, whoever sent it: for logs, never to act on alone."""
    return _error_fields(split(reply, (KIND_ERROR,)))


def _error_fields(parts, trusted=False):
    """(reason, detail) of an error frame's body; an untagged one longer than a cloud writes is not decoded."""
    if not trusted and len(parts.body) > MAX_ERROR_BODY:
        return R_TOO_LARGE, f"an unverified error of {len(parts.body)} bytes, more than a cloud's {MAX_ERROR_BODY}"
    payload = _decode(parts.body)
    return _shown(payload.get("reason"), MAX_REASON), _shown(payload.get("detail"), MAX_DETAIL)


def _shown(value, limit):
    """A text field of someone else's frame, for a log line: only a string is shown. str() of anything else
    could fail on its own (a list nested a thousand deep raises RecursionError) and stop the caller's loop."""
    return value[:limit] if isinstance(value, str) else f"<{type(value).__name__}>"


def error_frame(edge_id, nonce, reason, detail, secret=None):
    """A reply to a request that could not be used. Tagged only when the request was authenticated."""
    edge_id = edge_id if edge_id and EDGE_ID_RE.fullmatch(edge_id) else "unknown"
    nonce = nonce if nonce and len(nonce) == NONCE_BYTES else NO_NONCE
    return seal(KIND_ERROR, edge_id, secret, {"reason": reason, "detail": detail[:MAX_DETAIL]}, nonce=nonce)


def v2_upgrade_reply(frame):
    """A v2 error frame a v2 edge can read, telling its operator to upgrade."""
    size = frame[4] if len(frame) > 4 else 0
    edge = frame[5 : 5 + size].decode("ascii", errors="replace")
    edge_bytes = (edge if EDGE_ID_RE.fullmatch(edge) else "unknown").encode()
    body = msgpack.packb({"v": 2, "kind": "error", "reason": R_BAD_VERSION,
                          "detail": "this cloud speaks protocol v3 only: upgrade the edge"})
    return b"".join((MAGIC_V2, bytes((len(edge_bytes),)), edge_bytes, NO_TAG, body))


def request_nonce(frame):
    """The nonce of a frame's header, or zeros if it has none that can be read."""
    try:
        return split(frame).nonce
    except ProtocolError:
        return NO_NONCE


# --- heartbeat -----------------------------------------------------------


def heartbeat(edge_id, secret, backlog=0, now_ms=None, probes=(), **state):
    """A heartbeat: the edge's clock, its backlog and any further known state (HEARTBEAT_STATE), such as
    `paused` (the edge stopped reading Kafka because its backlog is at its disk budget). None means unknown.
    `probes`: up to MAX_PROBES acknowledged tuples, (id, household, window start, window end), to ask the
    cloud whether its store still holds them."""
    payload = {"ts": now_ms or int(time.time() * 1000), "backlog": int(backlog),
               **{name: value for name, value in state.items() if value is not None}}
    if probes:
        payload["probe"] = [list(probe) for probe in probes[:MAX_PROBES]]
    return seal(KIND_HEARTBEAT, edge_id, secret, payload)


def read_heartbeat(payload, now_ms=None):
    """The known edge-state fields of a heartbeat, after checking its clock. Unknown fields are ignored."""
    now_ms = now_ms or int(time.time() * 1000)
    ts = payload.get("ts")
    if type(ts) is not int:
        raise ProtocolError(R_BAD_BODY, f"heartbeat 'ts' must be an integer, got {type(ts).__name__}")
    if abs(ts - now_ms) > HEARTBEAT_SKEW_MS:
        raise ProtocolError(R_STALE, f"heartbeat time is {(ts - now_ms) / 1000:+.0f} s off the cloud's clock "
                                     f"(at most {HEARTBEAT_SKEW_MS // 1000} s): replayed, or a clock to fix")
    state = {}
    for name, kind in HEARTBEAT_STATE.items():
        value = payload.get(name)
        if type(value) is kind and (kind is not int or 0 <= value < TUPLE_ID_END):
            state[name] = int(value) if kind is bool else value
    return state


def read_probes(payload):
    """The probes of a heartbeat's payload as (id, household, window start, window end) tuples; () if it has
    none, or if any is not well formed (then none is answered: the reply's `held` must match the probes)."""
    probes = payload.get("probe") if isinstance(payload, dict) else None
    if not isinstance(probes, list) or not 0 < len(probes) <= MAX_PROBES:
        return ()
    read = []
    for probe in probes:
        if not (isinstance(probe, list) and len(probe) == 4 and type(probe[1]) is str
                and all(type(number) is int and 0 <= number < TUPLE_ID_END for number in (probe[0], probe[2], probe[3]))
                and not limits.household_problem(probe[1])):
            return ()
        read.append(tuple(probe))
    return tuple(read)


def heartbeat_reply(edge_id, secret, nonce, now_ms=None, store=None, held=None):
    """The reply to a heartbeat; `store`: the identity of the store the edge's tuples are in (None: not known
    now, the store being unreachable). An edge that hears another one than before sends again what it acked.
    `held`: whether that store holds each of the heartbeat's probes, in their order (None: not looked)."""
    payload = {"ts": now_ms or int(time.time() * 1000)}
    if store is not None:
        payload["store"] = store
        if held is not None:
            payload["held"] = [bool(one) for one in held]
    return seal(KIND_HEARTBEAT_REPLY, edge_id, secret, payload, nonce=nonce)


def read_held(payload, probes):
    """Whether the store held each of `probes` (the heartbeat's), as a tuple of bools; None if the reply does
    not say (an older cloud, the store unreachable) or says it for another number of probes."""
    held = payload.get("held") if isinstance(payload, dict) else None
    if (isinstance(held, list) and len(held) == len(probes) and probes
            and all(type(one) is bool for one in held)):
        return tuple(held)
    return None


def read_store(payload):
    """The store identity of a heartbeat reply's payload, or '' when it has none (a cloud whose store was
    unreachable, or from before identities) or one that is not a short printable id."""
    store = payload.get("store") if isinstance(payload, dict) else None
    return store if isinstance(store, str) and STORE_ID_RE.fullmatch(store) else ""


class ReplayGuard:
    """Remembers the nonces of recent requests, to refuse one seen before. No I/O; bounded.

    A nonce is kept for twice the heartbeat skew: older requests are refused
    by their clock anyway.
    """

    def __init__(self, keep_ms=2 * HEARTBEAT_SKEW_MS, most=100_000):
        self.keep_ms, self.most = keep_ms, most
        self.seen = OrderedDict()

    def fresh(self, edge, nonce, now_ms=None):
        """True the first time (edge, nonce) is shown, False on a replay."""
        now_ms = now_ms or int(time.time() * 1000)
        while self.seen and (len(self.seen) >= self.most or next(iter(self.seen.values())) < now_ms - self.keep_ms):
            self.seen.popitem(last=False)
        if (edge, nonce) in self.seen:
            return False
        self.seen[(edge, nonce)] = now_ms
        return True


# --- data batches --------------------------------------------------------


def batch_frame(edge_id, secret, rows):
    """rows: iterable of (id, household, window start ms, window end ms, average W, count)."""
    columns = list(zip(*rows)) or [()] * len(BATCH_COLUMNS)
    payload = {}
    for name, column in zip(BATCH_COLUMNS, columns):
        payload[name] = list(column)
    if len(payload["id"]) > MAX_BATCH_TUPLES:
        raise ValueError(f"a batch holds at most {MAX_BATCH_TUPLES} tuples, not {len(payload['id'])}")
    return seal(KIND_BATCH, edge_id, secret, payload)


def _column(payload, name, types):
    column = payload.get(name)
    if not isinstance(column, list):
        raise ProtocolError(R_BAD_BODY, f"column {name!r} is missing or not a list")
    for index, value in enumerate(column):
        if type(value) not in types:
            raise ProtocolError(R_BAD_BODY, f"column {name!r} item {index} is a {type(value).__name__}")
    return column


def read_batch(edge, payload):
    """Validate a batch's shape (types, equal lengths). Values are checked per tuple by `refusals`."""
    batch = Batch(
        edge=edge,
        ids=_column(payload, "id", (int,)),
        households=_column(payload, "hh", (str,)),
        starts=_column(payload, "ws", (int,)),
        ends=_column(payload, "we", (int,)),
        averages=_column(payload, "avg", (float, int)),
        counts=_column(payload, "n", (int,)),
    )
    lengths = {len(c) for c in (batch.ids, batch.households, batch.starts, batch.ends, batch.averages, batch.counts)}
    if len(lengths) != 1:
        raise ProtocolError(R_BAD_BODY, f"columns differ in length: {sorted(lengths)}")
    if not batch.ids:
        raise ProtocolError(R_EMPTY, "the batch holds no tuples")
    if len(batch.ids) > MAX_BATCH_TUPLES:
        raise ProtocolError(R_TOO_MANY, f"the batch holds {len(batch.ids)} tuples, at most {MAX_BATCH_TUPLES}")
    wrong = next((tid for tid in batch.ids if not 0 <= tid < TUPLE_ID_END), None)
    if wrong is not None:  # no edge's database gives it: the edge's probes of it could never be read
        raise ProtocolError(R_BAD_BODY, f"'id' must be in 0..2**63-1, got {_short(wrong)}")
    return batch


def refusals(batch, now_ms=None):
    """One reason per tuple ('' = acceptable), by the limits all nodes share. Bad tuples are refused, the rest stored."""
    now_ms = now_ms or int(time.time() * 1000)
    seen = set()
    reasons = []
    for tid, household, start, end, average, count in zip(
        batch.ids, batch.households, batch.starts, batch.ends, batch.averages, batch.counts
    ):
        reason = R_DUPLICATE_ID if tid in seen else limits.tuple_problem(household, start, end, average, count, now_ms)
        seen.add(tid)
        reasons.append(reason)
    return reasons


def reply_frame(edge_id, secret, nonce, postal_codes, reasons):
    """Per tuple, in request order: a postal code, or '' and a refusal reason; bound to the request's nonce."""
    return seal(KIND_REPLY, edge_id, secret, {"plz": postal_codes, "why": reasons}, nonce=nonce)


def read_reply(reply, request, secret, expected):
    """(postal codes, reasons) of the cloud's reply to `request`, a batch of `expected` tuples this edge sent.

    An error reply raises ProtocolError with the cloud's reason; so does a
    reply not tagged with the edge's own secret, or one naming another request.
    """
    payload = open_reply(reply, request, secret, KIND_BATCH)
    codes, reasons = payload.get("plz"), payload.get("why")
    if not (isinstance(codes, list) and isinstance(reasons, list) and len(codes) == len(reasons) == expected):
        raise ProtocolError(R_BAD_BODY, f"reply does not list {expected} tuples")
    # Tagged by the cloud, but the edge stores these: a postal code is five digits or nothing, a reason a word.
    for code, why in zip(codes, reasons):
        if not (isinstance(code, str) and (code == "" or POSTAL_CODE_RE.fullmatch(code))):
            raise ProtocolError(R_BAD_BODY, f"reply has a postal code that is not five digits: {_short(code)}")
        if not (isinstance(why, str) and len(why) <= MAX_REASON):
            raise ProtocolError(R_BAD_BODY, f"reply has a reason that is not a word: {_short(why)}")
    return codes, reasons


# --- legacy v1 -----------------------------------------------------------


def read_legacy_data(frame):
    """(id, node_id, average) of a v1 data request, strictly checked."""
    try:
        text = frame.decode("utf-8")
        message, repeated = json.loads(text), repeated_names(text)
    except (UnicodeDecodeError, ValueError, RecursionError):  # nested past the parser's depth: not a tuple either
        raise ProtocolError(R_BAD_BODY, "v1 request is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(R_BAD_BODY, "v1 request is not a JSON object")
    for name in V1_FIELDS:
        if name in repeated:  # which one JSON means is the parser's to pick (fogwire/jsonnames.py)
            raise ProtocolError(R_BAD_BODY, f"v1 '{name}' given twice")
    tid, node, average = (message.get(name) for name in V1_FIELDS)
    if type(tid) is not int or not 0 <= tid < TUPLE_ID_END:
        raise ProtocolError(R_BAD_BODY, f"v1 'id' must be an integer in 0..2**63-1, got {_short(tid)}")
    if limits.household_problem(node):
        raise ProtocolError(R_BAD_HOUSEHOLD, "v1 'node_id' must be a household id of "
                            f"1..{MAX_HOUSEHOLD_ID} characters of {limits.HOUSEHOLD_ALPHABET}")
    if type(average) not in (int, float):
        raise ProtocolError(R_BAD_BODY, f"v1 'average' must be a number, got {_short(average)}")
    reason, text = limits.power_problem(average)
    if reason:
        raise ProtocolError(reason, f"v1 'average': {text}"[:MAX_DETAIL])
    return tid, node, float(average)


def _short(value, most=40):
    """repr() of input, cut short: a reply or log line never echoes more than `most` characters of it."""
    if isinstance(value, (list, dict)):  # repr() of a deeply nested one fails (RecursionError) or runs long
        return f"a {'JSON array' if isinstance(value, list) else 'JSON object'} of {len(value)} items"
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"


def legacy_reply(tid, postal_code):
    return f"PLZ for id: {tid} - PLZ: {postal_code}".encode()
