"""JSON objects that give a name twice.

RFC 8259 says an object's names SHOULD be unique and leaves the rest to the
parser: orjson and json keep the last value, other parsers the first, some
refuse. Input the pipeline acts on must mean one thing wherever it is read,
so a name it reads, given twice, makes the whole input malformed: the edge's
Kafka messages (edge_app/readings.py) and the cloud's legacy v1 requests
(fogwire/protocol.py) ask here.

This module imports nothing of the project, nor Django.
"""

import json


class _Pairs(list):
    """An object's (name, value) pairs as json read them. json builds a list subclass in C, where a hook written
    in Python would run for every object: a message of many small objects is read several times faster."""

    __slots__ = ()


def repeated_names(text, **options):
    """The names the outermost object of the JSON `text` gives more than once (empty if it is no object).
    json.loads's own exceptions (RecursionError too, for nesting deeper than it reads) pass through."""
    value = json.loads(text, object_pairs_hook=_Pairs, **options)
    if type(value) is not _Pairs:
        return set()
    seen, twice = set(), set()
    for name, _ in value:
        (twice if name in seen else seen).add(name)
    return twice
