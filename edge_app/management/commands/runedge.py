import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from edge_app.control import LOOPS, EdgeControl, queue_name
from edge_app.ingest import IDLE_SECONDS
from edge_app.kafka_source import SOURCES
from edge_app.loops import cloud_tls_problem
from edge_app.supervisor import EdgeStartError, Supervisor
from fogsite.certdates import refusal
from fogsite.checks import PIPELINE_CHECKS
from fogsite.edge_database import check_edge_database
from fogsite.env import TOPIC_EXPECTED, TOPIC_RE, is_loopback, option_float, option_match
from fogwire.protocol import MAX_BATCH_TUPLES
from fogwire.stopsignals import stop_signals

LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}
log = logging.getLogger("fog.edge")


class Command(BaseCommand):
    requires_system_checks = PIPELINE_CHECKS
    help = ("Run the edge node: the ingest (Kafka -> 5 s windows -> tuples), sender (tuples -> cloud) and "
            "heartbeat loops as RQ jobs, in RQ workers this command starts and supervises. "
            "SIGINT, SIGTERM or SIGHUP stops every loop within 5 s. The summary line starts with `ended=WORD` "
            "(done, signal, stop, timeout or failed) and gives this run's counts, then the lifetime ones. "
            "An edge whose loops already run is not started twice: runedge says where they run and exits 1.")

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true",
                            help="run until the topic is consumed to its current end, every window is closed and "
                            "every tuple acknowledged; then print a summary and exit (while the cloud is away it "
                            "waits for it: --timeout bounds the wait)")
        parser.add_argument("--timeout", type=option_float(above=0), default=None, metavar="SECONDS",
                            help="give up after this many seconds (exit code 1 with --burst)")
        parser.add_argument("--no-workers", action="store_true",
                            help=f"only enqueue the loops; then start exactly {len(LOOPS)} workers (each loop holds "
                            "one for as long as it runs), each with the command this prints: `manage.py rqworker "
                            "edge:<FOG_EDGE_ID> --worker-class rq.worker.SimpleWorker`")
        parser.add_argument("--stop", action="store_true",
                            help="stop this edge's loops and its supervisor, on this host or any other that uses the "
                            "same edge Redis (FOG_EDGE_REDIS_URL), and exit")
        parser.add_argument("--batch", type=int, default=1000,
                            help="tuples per request to the cloud, at most 5000 (default %(default)s)")
        parser.add_argument("--in-flight", type=int, default=4, help="requests to the cloud at once (default %(default)s)")
        parser.add_argument("--idle", type=option_float(above=0), default=IDLE_SECONDS, metavar="SECONDS",
                            help="close a household's windows after this much wall-clock silence (default %(default)s); "
                            "a live window waits for its end and the live grace on its household's clock first")
        parser.add_argument("--topic", type=option_match(TOPIC_RE, TOPIC_EXPECTED), default=None,
                            help=f"Kafka topic to consume (default FOG_TOPIC, {settings.FOG_TOPIC} now)")
        parser.add_argument("--kafka-client", choices=list(SOURCES), default=None,
                            help="the ingest's Kafka client library (default FOG_EDGE_KAFKA_CLIENT, "
                            f"{settings.FOG_EDGE_KAFKA_CLIENT} now)")
        parser.add_argument("--insecure-plaintext", action="store_true",
                            help="dial a cloud beyond loopback (FOG_CLOUD_HOST) without TLS (FOG_TLS_CA unset): "
                            "household readings then cross the network in clear text, to whoever answers there; "
                            "without this flag runedge refuses to")
        parser.add_argument("--legacy-input", action="store_true",
                            help="read the original prototype's messages, {\"node_id\": ..., \"power_value\": W} with "
                            "no key and no time field: node_id is the household, the Kafka record timestamp the "
                            "event time")

    def execute(self, *args, **options):
        if options.get("insecure_plaintext"):  # accepted on purpose, and handle() logs a WARNING of its own
            settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, "fog.W011"]
        # A certificate out of date: handle() says so of this edge's own in one ERROR line and starts (the ingest
        # needs none), and the cloud's certificate on this host is runcloud's to refuse.
        settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, "fog.E014"]
        return super().execute(*args, **options)

    def handle(self, *args, **options):
        logging.getLogger("fog").setLevel(LOG_LEVELS.get(options["verbosity"], logging.INFO))
        if options["stop"]:
            EdgeControl(settings.FOG_EDGE_ID).request_stop()
            self.stdout.write(f"stop requested: the loops of edge {settings.FOG_EDGE_ID} and their supervisor, "
                              "wherever they run on this edge Redis, stop within 5 s")
            return
        if not 0 < options["batch"] <= MAX_BATCH_TUPLES or options["in_flight"] < 1:
            raise CommandError(f"--batch must be 1..{MAX_BATCH_TUPLES} and --in-flight at least 1")
        remote = sorted({host for host, *_ in settings.FOG_CLOUD_ENDPOINTS if not is_loopback(host)})
        if remote and not settings.FOG_TLS_CA and not options["insecure_plaintext"]:
            raise CommandError(f"the cloud ({', '.join(remote)}) is beyond loopback and FOG_TLS_CA is not set: "
                               "household readings would cross the network in clear text, to whoever answers "
                               "there. Set FOG_TLS_CA to the CA of the cloud's certificate (manage.py makecerts), "
                               "or pass --insecure-plaintext to accept clear text")
        if remote and not settings.FOG_TLS_CA:
            log.warning("--insecure-plaintext: readings cross the network to %s in clear text", ", ".join(remote))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # inherited as ignored, its workers' ends would go unseen
        problem = cloud_tls_problem()  # the loops' own TLS config: a bad file is one line, not failing workers
        if problem:
            raise CommandError(f"TLS: {problem}")
        if settings.FOG_TLS_CA and (out_of_date := refusal("FOG_EDGE_TLS_CERT", "FOG_TLS_CA")):
            # Said, not refused: the ingest needs no certificate, and readings left in Kafka age toward its
            # retention. The windows wait here until the certificate is renewed (the heartbeat says why).
            log.error("TLS: %s; the edge stores windows meanwhile, and sends them once it is renewed and runedge "
                      "started again", out_of_date)
        check_edge_database()
        stopping = []

        def on_signal(signum, frame):
            stopping.append(signum)  # the handler only sets the flag

        for signum in stop_signals():
            signal.signal(signum, on_signal)
        loop_options = {"burst": options["burst"], "batch": options["batch"], "in_flight": options["in_flight"],
                        "idle": options["idle"], "topic": options["topic"], "kafka_client": options["kafka_client"],
                        "legacy_input": options["legacy_input"]}
        supervisor = Supervisor(loop_options, stop_flag=lambda: bool(stopping), out=self.stdout.write,
                                worker_verbosity=2 if options["verbosity"] >= 2 else 0)
        try:
            supervisor.start(with_workers=not options["no_workers"])
        except EdgeStartError as exc:
            raise CommandError(str(exc)) from None
        if options["no_workers"]:
            self.stdout.write(no_workers_message(settings.FOG_EDGE_ID, options["burst"]))
            return
        result = supervisor.run(timeout=options["timeout"])
        self.stdout.write(result.line())
        if result.ended == "failed" or (options["burst"] and result.ended == "timeout"):
            raise CommandError(f"the run ended as {result.ended}")


def no_workers_message(edge_id, burst):
    command = (f"python manage.py rqworker {queue_name(edge_id)} --worker-class rq.worker.SimpleWorker"
               + (" --burst" if burst else ""))
    return (f"loops enqueued on the queue '{queue_name(edge_id)}'. Each loop keeps its worker for as long as it runs, "
            f"so start exactly {len(LOOPS)} workers, each with:\n  {command}")
