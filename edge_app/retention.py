"""Retention: acknowledged tuples older than FOG_EDGE_RETENTION_DAYS are deleted; nothing else ever is."""

import logging
from datetime import timedelta

from django.utils import timezone

from edge_app.models import WindowAggregate

log = logging.getLogger("fog.edge")


def delete_expired(days, now=None):
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = WindowAggregate.objects.expired(cutoff).delete()
    if deleted:
        log.info("retention: deleted %d acknowledged tuples older than %d days", deleted, days)
    return deleted
