"""The edge's health page: backlog, budget, pause and Kafka retention at a glance.

Login-free and read-only, like /metrics: it shows figures an operator needs
during an outage (often without an admin account at hand) and nothing
secret; it takes GET and HEAD only.
"""

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.http import require_safe

from edge_app.models import EdgeStatus, WindowAggregate


def duration(seconds):
    """'2 d 3 h', '4 h 12 min', '35 s'; None stays None."""
    if seconds is None:
        return None
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


@require_safe
def health(request):
    margin = settings.FOG_EDGE_RETENTION_MARGIN_HOURS * 3600
    edges = [{
        "status": status,
        "retention_left": duration(status.retention_left_seconds),
        "retention_short": status.retention_left_seconds is not None and status.retention_left_seconds < margin,
    } for status in EdgeStatus.objects.order_by("edge_id")]
    return render(request, "edge_app/health.html", {
        "edges": edges, "counts": WindowAggregate.objects.open_counts(), "margin": duration(margin),
    })
