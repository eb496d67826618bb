"""Prometheus figures of the cloud, read from where they are kept: the cloud Redis.

A store that can't be reached is a figure too (`fog_cloud_store_up` 0), not a failed scrape: the edge's half
of a host serving both (FOG_ROLE=all) is still served, and an alert can name what is down.
"""

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cloud_app.engine import STORE_ERRORS
from fogwire.ratelog import RateLimitedLog

log = RateLimitedLog(logging.getLogger("fog.cloud"), 1, 60.0)  # a line a minute at most, however often scraped


class CloudCollector:
    def __init__(self, readers):
        self.readers = readers  # gives the reader (a ReaderSource): a Redis Cluster client connects as it is made

    def collect(self):
        try:
            reader = self.readers()
            stats, edges = reader.stats(), reader.edges()
        except STORE_ERRORS as exc:
            log.warning("/metrics: the cloud store can't be read (%s); fog_cloud_store_up is 0", exc)
            stats = edges = None
        yield GaugeMetricFamily("fog_cloud_store_up", "1 if the cloud store (Redis) could be read",
                                value=0 if stats is None else 1)
        if stats is None:
            return
        yield CounterMetricFamily("fog_cloud_batches", "Data requests stored", value=stats.get("batches", 0))
        yield CounterMetricFamily("fog_cloud_tuples", "Tuples stored (each once)", value=stats.get("tuples", 0))
        yield CounterMetricFamily("fog_cloud_dedup_hits", "Tuples that came again and changed nothing",
                                  value=stats.get("dedup_hits", 0))
        refused = CounterMetricFamily("fog_cloud_refused", "Frames or tuples refused, by reason", labels=["reason"])
        for name, value in stats.items():
            if name.startswith("refused:"):
                refused.add_metric([name.split(":", 1)[1]], value)
        yield refused
        up = GaugeMetricFamily("fog_cloud_edge_connected", "1 if the edge's heartbeat came within 3 s", labels=["edge"])
        backlog = GaugeMetricFamily("fog_cloud_edge_backlog", "The edge's backlog as its heartbeat said",
                                    labels=["edge"])
        for edge in edges:
            up.add_metric([edge["edge"]], 1 if edge["connected"] else 0)
            backlog.add_metric([edge["edge"]], edge["backlog"])
        yield up
        yield backlog
