"""Unkeyed input in event-time order across partitions, with no I/O.

The original prototype's producer sends readings with no key, so Kafka spreads
each household over every partition, and the consumer reads partitions in
chunks: one partition's next thousand readings can come before another's
next ten. Applied in that order, a household's newest time would run ahead
and the other partitions' readings would all be late. This buffer releases
messages merged by event time, and only up to the watermark: the oldest
time the partitions that still have unread messages have reached. A
partition that is caught up holds nothing back. Within a partition the
offset order is kept, so the resume positions stay exact.
"""

import heapq
from collections import deque

NOT_YET = float("-inf")


class PartitionMerge:
    def __init__(self):
        self.buffers = {}  # partition -> deque of (event time, message), offset order
        self.seen = {}  # partition -> event time of the newest message it gave
        self.read_to = {}  # partition -> the offset after the last message it gave

    def add(self, partition, stamped):
        """Buffer one partition's messages, as (event time, message) pairs in offset order; a message is
        (offset, ...)."""
        if stamped:
            self.buffers.setdefault(partition, deque()).extend(stamped)
            self.seen[partition] = max(self.seen.get(partition, NOT_YET), stamped[-1][0])
            self.read_to[partition] = stamped[-1][1][0] + 1

    def buffered(self, partition):
        return len(self.buffers.get(partition, ()))

    def release(self, lagging):
        """(partition, message) pairs that are safe to apply, in event-time order.

        `lagging`: the partitions that may still hold unread messages (not caught up
        with the broker); each holds the rest back at the newest time it gave.
        """
        watermark = min((self.seen.get(p, NOT_YET) for p in lagging), default=None)
        heads = [(queue[0][0], partition) for partition, queue in self.buffers.items() if queue]
        heapq.heapify(heads)
        out = []
        while heads and (watermark is None or heads[0][0] <= watermark):
            _, partition = heapq.heappop(heads)
            queue = self.buffers[partition]
            out.append((partition, queue.popleft()[1]))
            if queue:
                heapq.heappush(heads, (queue[0][0], partition))
        return out
