import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from edge_app.kafka_source import SOURCES
from edge_app.loops import EdgeControl
from edge_app.supervisor import EdgeStartError, Supervisor
from fogwire.protocol import MAX_BATCH_TUPLES

LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


class Command(BaseCommand):
    help = ("Run the edge node: the ingest (Kafka -> 5 s windows -> tuples), sender (tuples -> cloud) and "
            "heartbeat loops as RQ jobs, in RQ workers this command starts and supervises. "
            "SIGINT/SIGTERM stops every loop within 5 s.")

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true",
                            help="run until the topic is consumed to its current end, every window is closed and "
                            "every tuple acknowledged; then print a summary and exit")
        parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                            help="give up after this many seconds (exit code 1 with --burst)")
        parser.add_argument("--no-workers", action="store_true",
                            help="only enqueue the loops, for workers started with `manage.py rqworker edge`")
        parser.add_argument("--stop", action="store_true",
                            help="ask the loops of this edge (wherever they run) to stop, and exit")
        parser.add_argument("--batch", type=int, default=1000, help="tuples per request to the cloud, at most 5000 (default %(default)s)")
        parser.add_argument("--in-flight", type=int, default=4, help="requests to the cloud at once (default %(default)s)")
        parser.add_argument("--idle", type=float, default=10.0, metavar="SECONDS",
                            help="close a household's windows after this much wall-clock silence (default %(default)s)")
        parser.add_argument("--topic", default=None, help="Kafka topic to consume (default FOG_TOPIC)")
        parser.add_argument("--kafka-client", choices=list(SOURCES), default=None,
                            help="the ingest's Kafka client library (default FOG_EDGE_KAFKA_CLIENT, "
                            f"{settings.FOG_EDGE_KAFKA_CLIENT} now)")

    def handle(self, *args, **options):
        logging.getLogger("fog").setLevel(LOG_LEVELS.get(options["verbosity"], logging.INFO))
        if options["stop"]:
            EdgeControl(settings.FOG_EDGE_ID).request_stop()
            self.stdout.write("stop requested")
            return
        if not 0 < options["batch"] <= MAX_BATCH_TUPLES or options["in_flight"] < 1:
            raise CommandError(f"--batch must be 1..{MAX_BATCH_TUPLES} and --in-flight at least 1")
        stopping = []

        def on_signal(signum, frame):
            stopping.append(signum)  # the handler only sets the flag

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        loop_options = {"burst": options["burst"], "batch": options["batch"], "in_flight": options["in_flight"],
                        "idle": options["idle"], "topic": options["topic"], "kafka_client": options["kafka_client"]}
        supervisor = Supervisor(loop_options, stop_flag=lambda: bool(stopping), out=self.stdout.write,
                                worker_verbosity=2 if options["verbosity"] >= 2 else 0)
        try:
            supervisor.start(with_workers=not options["no_workers"])
        except EdgeStartError as exc:
            raise CommandError(str(exc)) from None
        if options["no_workers"]:
            self.stdout.write("loops enqueued on the 'edge' queue; start workers with: manage.py rqworker edge "
                              "--worker-class rq.worker.SimpleWorker")
            return
        result = supervisor.run(timeout=options["timeout"])
        self.stdout.write(result.line())
        if options["burst"] and not result.completed and not stopping:
            raise CommandError("the burst run did not finish in time")
