from datetime import datetime, UTC

from django.contrib import admin, messages

from edge_app.models import EdgeStatus, Status, WindowAggregate


@admin.register(WindowAggregate)
class WindowAggregateAdmin(admin.ModelAdmin):
    list_display = ("id", "household", "window_start_utc", "average_w", "readings", "status", "postal_code",
                    "attempts", "refusal", "acked_at")
    list_filter = ("status", "refusal", "day")
    date_hierarchy = "day"
    search_fields = ("household",)  # prefix of the unique (household, window_start) index
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False  # a COUNT(*) of a million rows per page view is not worth it
    actions = ("send_again",)

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="window start (UTC)", ordering="window_start")
    def window_start_utc(self, obj):
        return datetime.fromtimestamp(obj.window_start / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")

    @admin.action(description="Send again (also refused ones, after a fix; the cloud's dedup makes it safe)")
    def send_again(self, request, queryset):
        """Back to PENDING: for a REFUSED tuple once its cause is fixed (the cloud's limits, its owner, the quota)."""
        changed = queryset.update(status=Status.PENDING, next_attempt_at=None, refusal="")
        self.message_user(request, f"{changed} tuples set back to pending.", messages.SUCCESS)

    def changelist_view(self, request, extra_context=None):
        counts = WindowAggregate.objects.counts_by_status()
        extra_context = {**(extra_context or {}), "title": "Tuples: " + ", ".join(f"{n} {label}" for label, n in counts.items())}
        return super().changelist_view(request, extra_context=extra_context)


@admin.register(EdgeStatus)
class EdgeStatusAdmin(admin.ModelAdmin):
    list_display = ("edge_id", "connected", "since", "last_heartbeat_at", "backlog", "readings", "late", "malformed",
                    "sent", "acked", "refused", "last_error")

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False
