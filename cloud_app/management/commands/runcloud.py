import asyncio
import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cloud_app.run import MAX_WORKERS, CloudStartError, run_cloud
from fogsite.checks import PIPELINE_CHECKS
from fogsite.env import option_float, option_host, option_int, option_port

LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


class Command(BaseCommand):
    requires_system_checks = PIPELINE_CHECKS
    help = (
        "Run the cloud node: pynng Rep sockets for heartbeats and data batches from edges, "
        "stored in the cloud Redis before each reply; tls+tcp when FOG_CLOUD_TLS_CERT is set. Refuses a bind "
        "beyond loopback with weak edge secrets or without TLS. Stops cleanly on SIGINT, SIGTERM or SIGHUP."
    )

    def add_arguments(self, parser):
        parser.add_argument("--bind", type=option_host, default=settings.FOG_CLOUD_BIND,
                            help="address to listen on (default FOG_CLOUD_BIND, %(default)s)")
        parser.add_argument("--heartbeat-port", type=option_port, default=settings.FOG_HEARTBEAT_PORT,
                            help="heartbeat port (default FOG_HEARTBEAT_PORT, %(default)s)")
        parser.add_argument("--data-port", type=option_port, default=settings.FOG_DATA_PORT,
                            help="data port (default FOG_DATA_PORT, %(default)s)")
        parser.add_argument("--workers", type=option_int(1, MAX_WORKERS), default=8,
                            help=f"data requests served at once (pynng contexts; 1..{MAX_WORKERS}, default %(default)s)")
        parser.add_argument("--allow-volatile", action="store_true",
                            help="start even if the cloud Redis does not fsync every write (ACKs may then "
                            "cover data a Redis crash loses) or may evict keys when full (maxmemory-policy "
                            "other than noeviction: stored tuples may then vanish and a resent one count twice)")
        parser.add_argument("--insecure-plaintext", action="store_true",
                            help="allow a bind beyond loopback without TLS (readings then cross the network in "
                            "clear text)")
        parser.add_argument("--legacy-v1", action="store_true",
                            help="also answer the original prototype's v1 formats on the same ports (no "
                            "authentication: anyone who can reach them can store tuples); loopback only")
        parser.add_argument("--legacy-v1-public", action="store_true",
                            help="allow --legacy-v1 on a bind beyond loopback")
        parser.add_argument("--legacy-edge-id", default="legacy",
                            help="edge id under which v1 tuples are stored; must not be an authenticated (v3) edge's id "
                            "(default %(default)s)")
        parser.add_argument("--until", type=option_float(above=0), default=None, metavar="SECONDS",
                            help="stop by itself after this many seconds (for tests and benchmarks)")

    def execute(self, *args, **options):
        if options.get("insecure_plaintext"):  # accepted on purpose, and the start logs a WARNING of its own
            settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, "fog.W010"]
        # A certificate out of date: the start refuses the cloud's own in one line (cloud_app/run.py), and an
        # edge's certificate on this host is runedge's to refuse.
        settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, "fog.E014"]
        return super().execute(*args, **options)

    def handle(self, *args, **options):
        logging.getLogger("fog").setLevel(LOG_LEVELS.get(options["verbosity"], logging.INFO))
        if options["heartbeat_port"] == options["data_port"]:
            raise CommandError("--heartbeat-port and --data-port must differ")
        if options["legacy_v1_public"] and not options["legacy_v1"]:
            raise CommandError("--legacy-v1-public only makes sense with --legacy-v1")
        try:
            counts = asyncio.run(run_cloud(
                bind=options["bind"], heartbeat_port=options["heartbeat_port"], data_port=options["data_port"],
                workers=options["workers"], allow_volatile=options["allow_volatile"],
                legacy_edge=options["legacy_edge_id"] if options["legacy_v1"] else None, until=options["until"],
                insecure_plaintext=options["insecure_plaintext"], legacy_public=options["legacy_v1_public"],
            ))
        except CloudStartError as exc:
            raise CommandError(str(exc)) from None
        if options["verbosity"]:
            self.stdout.write("cloud stopped: " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                                                   or "no frame handled"))
