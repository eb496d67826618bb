import json

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cloud_app.engine import STORE_ERRORS, connect
from fogsite.checks import PIPELINE_CHECKS
from fogsite.edge_database import check_edge_database
from fogsite.reconcile import reconcile

COLUMNS = ("expected", "acked", "pending", "refused", "missing_in_cloud", "duplicated")


class Command(BaseCommand):
    requires_system_checks = PIPELINE_CHECKS
    help = ("Compare the windows this edge stored, and their delivery states, with what the cloud holds; "
            "recompute the cloud's per-state sums. Exits 1 on any loss, duplicate or sum mismatch. Run it on the "
            "edge's host, with the cloud store's FOG_CLOUD_REDIS_URL and FOG_CLOUD_KEY_PREFIX: it fails when the "
            "two are not the edge's database and the store that acknowledged its tuples.")

    def add_arguments(self, parser):
        parser.add_argument("--edge-id", default=settings.FOG_EDGE_ID, help="edge to check (default FOG_EDGE_ID, %(default)s)")
        parser.add_argument("--strict", action="store_true",
                            help="also fail while tuples are pending or refused (use once the pipeline is quiet)")
        parser.add_argument("--all", action="store_true", help="list every household, not only those with problems")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args, edge_id, strict, all, **options):
        try:
            client = connect(settings.FOG_CLOUD_REDIS_URL, socket_timeout=30)  # a cluster client connects here
            client.ping()
            check_edge_database()  # unreachable or unmigrated: one line, not the traceback of the first read
            report = reconcile(edge_id, client, settings.FOG_CLOUD_KEY_PREFIX)
        except redis.exceptions.ConnectionError as exc:
            raise CommandError(f"cloud Redis at {settings.FOG_CLOUD_REDIS_URL} is unreachable: {exc}") from None
        except STORE_ERRORS as exc:  # a cluster it can't reach or map is not a RedisError
            raise CommandError(f"cloud Redis at {settings.FOG_CLOUD_REDIS_URL} failed: "
                               f"{type(exc).__name__}: {exc}") from None
        if options["json"]:
            self.stdout.write(json.dumps({**report.as_dict(), "ok": report.ok(strict)}, indent=2))
        else:
            self._table(report, all)
        if report.not_a_pair:
            raise CommandError(f"reconcile failed: {report.not_a_pair}")
        if not report.ok(strict):
            totals = report.totals
            raise CommandError(f"reconcile failed: {totals.missing_in_cloud} missing in cloud, {totals.duplicated} "
                               f"duplicated, {len(report.sum_mismatches)} sum mismatches"
                               + (f", {totals.pending} pending, {totals.refused} refused" if strict else "")
                               + (", the sums not checked (the store took tuples while it was read)"
                                  if strict and report.sums_unchecked else ""))

    def _table(self, report, everyone):
        width = max([len("household")] + [len(r.household) for r in report.households[:1000]] + [5])
        width = min(width, 66)
        self.stdout.write(f"{'household':<{width}} " + " ".join(f"{c:>16}" for c in COLUMNS))
        shown = [r for r in report.households if everyone or r.bad]
        for row in shown:
            self.stdout.write(f"{row.household[:width]:<{width}} " + " ".join(f"{getattr(row, c):>16}" for c in COLUMNS))
        if not everyone and len(shown) < len(report.households):
            self.stdout.write(f"({len(report.households) - len(shown)} households without problems; --all lists them)")
        totals = report.totals
        self.stdout.write(f"{'TOTAL':<{width}} " + " ".join(f"{getattr(totals, c):>16}" for c in COLUMNS))
        self.stdout.write(f"cloud holds {report.cloud_tuples} tuples of edge {report.edge}"
                          + (f" ({report.unknown_to_edge} no longer on the edge)" if report.unknown_to_edge else ""))
        for reason, number in sorted(report.refusals.items()):
            self.stdout.write(f"refused by the cloud for good: {number} tuples ({reason}); "
                              "the admin's 'Send again' action retries them after a fix")
        for problem in report.sum_mismatches:
            self.stdout.write(f"sum mismatch: {problem}")
        if report.sums_unchecked:
            self.stdout.write(report.sums_unchecked)
        elif not report.sum_mismatches:
            self.stdout.write("per-state sums match the stored tuples")


