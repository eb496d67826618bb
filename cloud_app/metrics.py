"""Prometheus figures of the cloud, read from where they are kept: the cloud Redis."""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class CloudCollector:
    def __init__(self, reader):
        self.reader = reader

    def collect(self):
        stats = self.reader.stats()
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
        for edge in self.reader.edges():
            up.add_metric([edge["edge"]], 1 if edge["connected"] else 0)
            backlog.add_metric([edge["edge"]], edge["backlog"])
        yield up
        yield backlog
