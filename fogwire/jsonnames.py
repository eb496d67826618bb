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


def loads_noting_repeats(text, **options):
    """(json.loads(text, **options), the names its outermost object gives more than once: empty if it is no
    object). json calls the hook for each object as it closes, so for the outermost one last."""
    found = []

    def pairs(items):
        seen, twice = set(), set()
        for name, _ in items:
            (twice if name in seen else seen).add(name)
        found.append(twice)
        return dict(items)

    value = json.loads(text, object_pairs_hook=pairs, **options)
    return value, (found[-1] if isinstance(value, dict) else set())
