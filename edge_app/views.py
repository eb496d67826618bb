"""The edge host's health page: is the edge database readable, is the link to the cloud up, what waits.

For load balancers and operators on an edge host (FOG_ROLE=edge or all). It reads only the edge
database: 200 with the figures while the database answers, 503 saying why when it does not.
"""

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.utils import timezone

from edge_app.models import EdgeStatus, WindowAggregate


def health(request):
    try:
        counts = WindowAggregate.objects.counts_by_status()
        status = EdgeStatus.objects.filter(edge_id=settings.FOG_EDGE_ID).first()
    except DatabaseError as exc:
        return JsonResponse({"edge": settings.FOG_EDGE_ID, "ok": False,
                             "error": f"edge database: {exc}"[:300]}, status=503)
    link = {"connected": False, "since": None, "last_heartbeat": None, "last_error": ""}
    if status is not None:
        link = {"connected": status.connected, "since": status.since.isoformat(),
                "last_heartbeat": status.last_heartbeat_at.isoformat() if status.last_heartbeat_at else None,
                "last_error": status.last_error}
    return JsonResponse({"edge": settings.FOG_EDGE_ID, "ok": True, "now": timezone.now().isoformat(),
                         "link": link, "tuples": counts, "backlog": counts["pending"] + counts["sent"]})
