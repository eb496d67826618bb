"""Prometheus figures of the edge, read from where they are kept: the edge database."""

from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge_app.models import EdgeStatus, WindowAggregate


class EdgeCollector:
    def collect(self):
        backlog = GaugeMetricFamily("fog_edge_tuples", "Tuples in the edge database not yet acknowledged, by status "
                                    "(the acknowledged ones: fog_edge_acked_total)", labels=["status"])
        for status, count in WindowAggregate.objects.open_counts().items():
            backlog.add_metric([status], count)
        yield backlog
        refused = GaugeMetricFamily("fog_edge_refused_tuples", "Tuples the cloud refused for good (status refused), "
                                    "by its reason", labels=["reason"])
        for reason, count in WindowAggregate.objects.refused_by_reason().items():
            refused.add_metric([reason], count)
        yield refused
        counters = {
            "readings": "Readings consumed from Kafka",
            "windows": "Tuples (closed windows) the ingest stored", "late": "Readings for an already closed window",
            "duplicates": "Readings at a time their household's open window already had (not applied)",
            "malformed": "Readings set aside as malformed (a Kafka message unreadable as a whole counts once)",
            "sent": "Tuples handed to the cloud",
            "acked": "Tuples the cloud acknowledged", "refused": "Tuples the cloud refused",
        }
        families = {name: CounterMetricFamily(f"fog_edge_{name}", text, labels=["edge"])
                    for name, text in counters.items()}
        link = GaugeMetricFamily("fog_edge_link_up", "1 while the heartbeat reaches the cloud", labels=["edge"])
        offline = GaugeMetricFamily("fog_edge_offline_seconds", "Seconds since the link went down (0 while up)",
                                    labels=["edge"])
        families["lost_to_retention"] = CounterMetricFamily(
            "fog_edge_lost_to_retention", "Kafka records (a reading, or a batch of readings) "
            "Kafka's retention deleted before the edge read them",
            labels=["edge"])
        families["sent_again"] = CounterMetricFamily(
            "fog_edge_sent_again", "Acknowledged tuples sent again because the cloud's store was emptied, "
            "replaced (the heartbeat's reply named another store) or set back (it lacked tuples it had "
            "acknowledged)", labels=["edge"])
        outage = {
            "backlog": GaugeMetricFamily("fog_edge_backlog_tuples", "PENDING + SENT tuples, as the last heartbeat "
                                         "counted them", labels=["edge"]),
            "budget": GaugeMetricFamily("fog_edge_budget_tuples", "Backlog at which the ingest pauses",
                                        labels=["edge"]),
            "paused": GaugeMetricFamily("fog_edge_ingest_paused", "1 while the ingest waits for the backlog to fall "
                                        "below the low-water mark", labels=["edge"]),
        }
        retention = GaugeMetricFamily("fog_edge_retention_seconds_left", "Seconds before Kafka may delete the oldest "
                                      "reading the edge still needs (absent: none unread, or no limit)",
                                      labels=["edge"])
        now = timezone.now()
        for status in EdgeStatus.objects.all():
            for name, family in families.items():
                family.add_metric([status.edge_id], getattr(status, name))
            for name, family in outage.items():
                family.add_metric([status.edge_id], int(getattr(status, name)))
            if status.retention_left_seconds is not None:
                retention.add_metric([status.edge_id], status.retention_left_seconds)
            link.add_metric([status.edge_id], 1 if status.connected else 0)
            offline.add_metric([status.edge_id], 0 if status.connected else (now - status.since).total_seconds())
        yield from families.values()
        yield from outage.values()
        yield retention
        yield link
        yield offline
