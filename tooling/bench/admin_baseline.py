"""`bench admin`'s baseline: the edge's admin as it was before issue 16, on a site of its own.

The ModelAdmin classes below are that configuration, kept unchanged so the
bench can time it in the same run as today's admin: a GROUP BY over every
tuple for the header, a date drill-down and a substring search. This module
is also the bench child's URLconf: today's admin at /admin/, the baseline at
/baseline-admin/.
"""

from datetime import datetime, UTC

from django.contrib import admin
from django.db.models import Count
from django.urls import path

from edge_app.models import EdgeStatus, Status, WindowAggregate

site = admin.AdminSite(name="baseline")


class WindowAggregateAdmin(admin.ModelAdmin):
    list_display = ("id", "household", "window_start_utc", "average_w", "readings", "status", "postal_code",
                    "attempts", "refusal", "acked_at")
    list_filter = ("status", "day")
    date_hierarchy = "day"
    search_fields = ("household",)
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="window start (UTC)", ordering="window_start")
    def window_start_utc(self, obj):
        return datetime.fromtimestamp(obj.window_start / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")

    def changelist_view(self, request, extra_context=None):
        counts = {status.label: 0 for status in Status}
        for row in WindowAggregate.objects.order_by().values("status").annotate(n=Count("id")):
            counts[Status(row["status"]).label] = row["n"]
        extra_context = {**(extra_context or {}), "title": "Tuples: " + ", ".join(f"{n} {label}" for label, n in counts.items())}
        return super().changelist_view(request, extra_context=extra_context)


class EdgeStatusAdmin(admin.ModelAdmin):
    list_display = ("edge_id", "connected", "since", "last_heartbeat_at", "backlog", "readings", "late", "malformed",
                    "sent", "acked", "refused", "last_error")

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


site.register(WindowAggregate, WindowAggregateAdmin)
site.register(EdgeStatus, EdgeStatusAdmin)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("baseline-admin/", site.urls),
]
