import json
import logging
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tooling.bench import admin, api, cloud, e2e, edge, latency, scale, simulate, store, windows
from tooling.bench.common import carry_generated, python_speed
from tooling.localservices import redis_hostport, split_hostport
from tooling.net import port_open
from tooling.signals import stop_on_signals

# The project's own services each benchmark talks to (`python manage.py services up` starts them). They are
# checked before a run, so a stopped one is named at once, not met as a client's traceback minutes in.
NEEDS = {"cloud": ("redis",), "drain": ("redis",), "ingest": ("kafka",), "simulate": ("kafka",),
         "realtime": ("kafka",), "latency": ("kafka", "redis"), "api": ("redis",), "e2e": ("kafka", "redis"),
         "scale": ("kafka", "redis")}


def sizes(text):
    """'10000,100000' -> [10000, 100000]: run the benchmark at each size, to see how its cost grows."""
    try:
        values = [int(part.replace("_", "")) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"expected whole numbers separated by commas, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise ValueError("sizes must be positive")
    return values


# name: (function, help, [(option, type, default, help), ...])
BENCHMARKS = {
    "cloud": (cloud.run, "the cloud alone: decode, verify, Redis write, reply (target >= 100,000 tuples/s); beside "
              "the same batches 1 in flight, and those beside one tuple a request", [
        ("--tuples", int, 100_000, "tuples to store (in each of the two batched passes)"),
        ("--batch", int, 1000, "tuples a request"),
        ("--in-flight", int, 4, "requests at once"),
        ("--baseline-tuples", int, 2000, "tuples sent one a request, 1 in flight, for the batching baseline"),
    ]),
    "drain": (edge.run_drain, "a PENDING backlog edge -> real cloud until all ACKED (target >= 50,000 tuples/s); "
              "beside an ORM update a row marking ACKs, the same batches 1 in flight, and those beside one "
              "tuple a request", [
        ("--tuples", sizes, [100_000], "backlog size(s), comma-separated to see the growth, e.g. 10000,100000,1000000"),
        ("--batch", int, 1000, "tuples a request"),
        ("--in-flight", int, 4, "requests at once"),
        ("--baseline-tuples", int, 1000, "tuples sent one a request, 1 in flight, for the batching baseline"),
        ("--orm-tuples", int, 10_000, "tuples (at most the backlog) drained as shipped, then with an ORM update a "
                                       "row marking the ACKs, then with the ORM's SELECT and UPDATE claiming each "
                                       "batch"),
    ]),
    "ingest": (edge.run_ingest, "Kafka readings -> closed windows stored (target >= 50,000 readings/s); beside "
               "the edge's other Kafka client on the same readings, beside the ORM's bulk_create, and the same "
               "readings in batches beside them one a message", [
        ("--readings", int, 500_000, "readings to produce and ingest (every pass reads them all)"),
        ("--households", int, 1000, "households they come from"),
        ("--baseline-readings", int, 20_000, "with one --client: readings (at most --readings) processed one by "
         "one, a commit per window, for the baseline"),
        ("--client", ["both", *edge.INGEST_CLIENTS], "both", "Kafka client: both (the faster is the figure, the "
         "other the baseline, same readings), confluent or kafka-python"),
        ("--profile", "flag", False, "also profile each client with pyinstrument (an untimed run) and print where "
         "the time goes"),
    ]),
    "store": (store.run, "the ingest storing, at every window end, a burst of closed windows into an edge "
              "database with a history, in the unique key's order; beside the same bursts in the order they closed", [
        ("--households", int, 100_000, "households, each with a window closing at every window end"),
        ("--ends", int, 24, "window ends stored one after another (the last quarter is timed)"),
        ("--household-first", "flag", False, "also store the same bursts, in household order, into a database "
         "whose unique key is (household, window_start), as before the household index was built in sorted runs, "
         "beside the shipped (window_start, household): what the household-first key cost the ingest"),
        ("--checkpoint", "flag", False, "also store the same bursts, in each order, with SQLite's default WAL "
         "checkpoint (every 1000 pages) instead of the edge's SQLITE_CHECKPOINT_PAGES, each beside its shipped run"),
    ]),
    "windows": (windows.run, "the edge's window book alone at real time, compiled by `make build`, in readings "
                "applied a second of CPU; beside edge_app/windows.py run as Python on the same readings", [
        ("--households", int, 100_000, "households, each with staggered windows"),
        ("--seconds", int, 60, "simulated seconds of readings (the book runs as fast as it can)"),
        ("--step", int, 2, "seconds between a household's readings"),
    ]),
    "simulate": (simulate.run_simulate, "runsimulation --speed max into Kafka (target >= 100,000 readings/s); "
                 "beside the same run with the other Kafka client, and with one reading a message", [
        ("--households", sizes, [10_000], "household count(s), comma-separated, e.g. 1000,10000,50000"),
        ("--until", int, 60, "simulated seconds"),
        ("--client", str, "confluent", "Kafka client: confluent or kafka-python"),
        ("--baseline-client", str, "kafka-python", "Kafka client of the baseline run: kafka-python or confluent"),
    ]),
    "realtime": (simulate.run_realtime, "runsimulation --speed 1 at a 1 s step: largest lag (target < 1 s)", [
        ("--households", int, 10_000, "households"),
        ("--until", int, 60, "seconds of real time"),
    ]),
    "latency": (latency.run, "window stored -> ACK in the edge DB at real time, p50/p99 (target p99 <= 100 ms)", [
        ("--households", int, 1000, "households"),
        ("--seconds", int, 60, "seconds of real time"),
    ]),
    "e2e": (e2e.run, "the whole pipeline at real time, window end -> dashboard websocket: freshness p50/p99/max, "
                     "readings and tuples/s, CPU and memory (PSS) per process, the whole machine's CPU and how much of "
                     "the time every core was busy, the busiest threads and the edge's loops with how busy each was (running "
                     "or ready to run: one busy nearly all the time is the stage that holds the rest back) (target p99 <= 3 s)", [
        ("--households", int, 1000, "households"),
        ("--seconds", int, 60, "seconds measured after a warm-up"),
        ("--step", int, 2, "seconds between a household's readings (whole seconds, as runsimulation --step)"),
        ("--find-capacity", "flag", False, "search for the largest number of households that holds: p99 "
                                           "freshness <= 5 s, pace, next to no late readings, no tuple "
                                           "refused for good, 99%% of the tuples timed; each trial measured 2 "
                                           "minutes, the size it reports held in two trials"),
        ("--baseline", tuple(e2e.BASELINES), None, "also run the same households (with --find-capacity, the same "
         "search) with one setting changed, as the baseline: live-windows (the default) FOG_LIVE_WINDOWS=off, "
         "windows close by event time alone; "
         "aligned-windows FOG_WINDOW_STAGGER=off, every household's windows end at once (with --stagger); gc "
         "FOG_FULL_GC_SECONDS=0, CPython's own full garbage collections; rdb-compression the cloud Redis with "
         "rdbcompression yes, its AOF rewrites compressed (a single Redis that allows CONFIG SET; every run "
         "sets the setting and puts it back after); single-readings runsimulation --readings-per-message 1, a "
         "Kafka message a reading instead of batches; built-when-due runsimulation --build-ahead off, each step "
         "built when it is due and sent once built instead of sent at its moment; spread-readings "
         "runsimulation --spread on, each household reading at a moment of its own in the step and sent then; "
         "household-first-key the edge as it was before its household index was built in sorted runs: the "
         "unique key (household, window_start) instead of the shipped (window_start, household), each tuple put "
         "into its household's run as it is stored, and no sorted runs (not a setting: the table is made again "
         "before the edge starts); both runs then hold the history below; history the edge's "
         f"database holding {e2e.HISTORY_WINDOWS_DEFAULT} acknowledged windows of each household before the edge "
         "starts, as after a while of running, where every run starts from an empty one"),
        ("--warmup", int, e2e.WARMUP_S, "seconds the pipeline runs before measuring (the first windows close, "
                                        "workers and sockets settle); then, if no tuple reached the page yet, "
                                        f"until one does, at most {e2e.FIRST_TUPLE_WAIT_S} s more"),
        ("--stagger", "flag", False, "every run with FOG_WINDOW_STAGGER=on, each household's windows at a phase "
                                     "of its own (compare with --baseline aligned-windows)"),
    ]),
    "api": (api.run, "/api/states/ p50/p99 under concurrent clients, many tuples stored (target p99 <= 20 ms); "
            "beside Django's stock ASGIHandler", [
        ("--tuples", int, 1_000_000, "tuples stored through the cloud's store first"),
        ("--households", int, 10_000, "households they belong to"),
        ("--clients", int, 8, "concurrent clients (threads of a second process)"),
        ("--requests", int, 250, "requests per client"),
    ]),
    "admin": (admin.run, "the edge's admin pages with N tuples stored: p50/p95 server time per page beside the "
              "old admin configuration (target p95 <= 300 ms)", [
        ("--tuples", int, 1_000_000, "tuples in the edge database, filled through the ingest's INSERT"),
        ("--households", int, 1000, "households they belong to"),
        ("--days", int, 7, "days they span"),
        ("--requests", int, 20, "timed requests per page"),
        ("--baseline-requests", int, 3, "timed requests per page of the old admin (seconds each at millions)"),
        ("--database", admin.database_kind, "sqlite", "sqlite (a fresh file) or postgres (a fresh database on "
                                                      "--postgres-url's server, dropped afterwards)"),
        ("--postgres-url", str, "", "the PostgreSQL server for --database postgres; default: FOG_DATABASE_URL's "
                                    f"when it names postgres, else {admin.DEFAULT_POSTGRES_URL} (started if down)"),
        ("--keep", str, "", "keep the filled database for later runs, and reuse the one an earlier --keep run "
                            "left in this folder for the same --database, --tuples, --households and --days "
                            "(SQLite: a file in the folder; PostgreSQL: a database left on the server); the output "
                            "and the written table say when a run reused one. Default: fill a fresh one, remove it"),
        ("--write", str, "", "put the table into this Markdown file's generated admin section, "
                             "e.g. docs/BENCHMARKS.md"),
    ]),
    "scale": (scale.run, "the cloud with 1/2/4 replicas on one store, one replica on a single Redis against a "
              "Redis Cluster, and 1/3/10 edges delivering at once (each series against its first)", [
        ("--replicas", sizes, [1, 2, 4], "cloud replica counts, comma-separated"),
        ("--edges", sizes, [1, 3, 10], f"edge counts, comma-separated (at most {scale.MAX_EDGES})"),
        ("--tuples", int, 100_000, "tuples sent into the replicas"),
        ("--tuples-per-edge", int, 20_000, "PENDING backlog each edge drains"),
        ("--engine-tuples", int, 100_000, "tuples sent into one replica on the single Redis, then into one on a "
                                          "local 3-master Redis Cluster the run starts and ends (0: skip)"),
        ("--batch", int, 1000, "tuples a request"),
        ("--in-flight", int, 8, "requests at once into the replicas (in total)"),
    ]),
}


# `bench all`: every benchmark at its default size, and the growth series.
ALL = [
    ("cloud", {}),
    ("drain", {"tuples": [10_000, 100_000, 1_000_000]}),
    ("ingest", {"profile": True}),
    ("store", {}),
    ("windows", {}),
    ("simulate", {"households": [1_000, 10_000, 50_000]}),
    ("realtime", {}),
    ("latency", {}),
    ("api", {}),
    ("e2e", {"baseline": True}),
    ("scale", {}),
]

NOTES = [
    "Each baseline differs from its figure in one thing only, and runs on the same data, in the same process",
    "(store: each order in a child process of its own, with a fresh database):",
    "",
    "- cloud and drain: the same batches with one request in flight instead of several; then those batches",
    "  against one tuple a request (both with one in flight). drain also: an ORM update a row marking",
    "  the ACKs instead of the one prepared UPDATE run over them all (both over --orm-tuples); and the ORM's",
    "  SELECT of the next batch, then its UPDATE of those rows to SENT, instead of one UPDATE ... RETURNING.",
    "- ingest: the edge's other Kafka client (confluent-kafka or kafka-python) on the same readings; and,",
    "  separately, the ORM's `bulk_create` instead of the one prepared INSERT run over all rows; and the same",
    "  readings in batches of 1000 a message (the simulation's default) against them one a message.",
    "- store: the same bursts of closed windows in the order they closed (at random as to household) instead",
    "  of household order, each order in a fresh database; with --checkpoint, each order also with SQLite's",
    "  default WAL checkpoint instead of the edge's (fogsite.settings.SQLITE_CHECKPOINT_PAGES).",
    "- api: Django's stock `ASGIHandler` instead of `fogsite.http.OneHopASGIHandler`, same server and load.",
    "- e2e: the same households with `FOG_LIVE_WINDOWS=off` (windows close by event time alone); with",
    "  `--baseline gc`, with `FOG_FULL_GC_SECONDS=0` (CPython's own full garbage collections); with",
    "  `--baseline rdb-compression`, with the cloud Redis at `rdbcompression yes` (every e2e run sets it, to",
    "  `no` as `make services` starts Redis, or to the baseline's value, and puts the server's own back); with",
    "  `--baseline single-readings`, with the simulation sending a Kafka message a reading instead of batches;",
    "  with `--baseline built-when-due`, with the simulation building each step when it is due and sending it",
    "  once built, instead of building it ahead and sending it at the moment its readings carry; with",
    "  `--baseline spread-readings`, with each synthetic household reading at a moment of its own in the step",
    "  and sent then, instead of every household at the step's start and the step sent at once;",
    "  with `--stagger --baseline aligned-windows`, staggered windows against `FOG_WINDOW_STAGGER=off`, the",
    "  default, where every household's windows end at once.",
    "- windows: edge_app/windows.py run as Python instead of compiled (`make build`), each in a child process",
    "  of its own, on the same readings.",
    "- simulate: the same simulation with kafka-python's producer instead of confluent-kafka's; and with one",
    "  reading a message instead of batches of 1000.",
    "- scale: each series against its first row; the store rows send the same tuples into one replica on the",
    "  single Redis, then on a local 3-master Redis Cluster (only the store's engine differs).",
    "",
    "Where the time goes: the profiles below were taken by pyinstrument in the run that wrote this file; a",
    "profile not taken by that run is not quoted here.",
]


class Command(BaseCommand):
    help = ("Run a benchmark against the real local broker, Redis and pynng sockets, and print each figure next "
            "to a baseline measured in the same run that differs from it in one thing. Benchmarks are not tests.")

    def add_arguments(self, parser):
        # Also before NAME (`bench --json cloud`), as users of --json flags expect. Its own dest: a
        # subcommand's defaults overwrite the namespace, which would reset a shared `json` to False.
        parser.add_argument("--json", dest="json_before_name", action="store_true",
                            help="print the figures as JSON (also accepted after NAME)")
        sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
        every = sub.add_parser("all", help="every benchmark at its default size, with the growth series "
                               "(drain at 10k/100k/1M tuples, simulate at 1k/10k/50k households)")
        every.add_argument("--write", metavar="PATH", help="write the figures as Markdown (e.g. docs/BENCHMARKS.md)")
        every.add_argument("--json", action="store_true", help="print the figures as JSON")
        for name, (_, text, arguments) in BENCHMARKS.items():
            child = sub.add_parser(name, help=text, description=text)
            for option, kind, default, option_help in arguments:
                if kind == "flag":
                    child.add_argument(option, action="store_true", help=option_help)
                elif isinstance(kind, tuple):  # a flag that may name one of the words (the first without one)
                    child.add_argument(option, nargs="?", const=kind[0], choices=kind, default=default,
                                       metavar="{" + ",".join(kind) + "}", help=option_help)
                elif isinstance(kind, list):  # a choice of words
                    child.add_argument(option, choices=kind, default=default,
                                       help=f"{option_help} (default %(default)s)")
                else:
                    child.add_argument(option, type=kind, default=default, help=f"{option_help} (default %(default)s)")
            child.add_argument("--json", action="store_true", help="print the figures as JSON")
            if name in ("scale", "e2e"):
                example = "--write docs/BENCHMARKS.md" + (" --write docs/SCALING.md" if name == "scale" else "")
                child.add_argument("--write", action="append", metavar="PATH", default=[],
                                   help=f"put the figures into the generated {name} section of PATH (again for "
                                   f"another file), e.g. {example}")

    def handle(self, *args, name, json_before_name=False, **options):
        options["json"] = options.get("json") or json_before_name
        stop_on_signals(self.stderr.write)  # SIGTERM and SIGHUP like Ctrl-C: each run's finally stops its pipeline
        logging.getLogger("fog").setLevel(logging.WARNING if options["verbosity"] < 2 else logging.DEBUG)
        logging.getLogger("kafka").setLevel(logging.ERROR)  # the benchmark's own producers' chatter
        if name == "all":
            for each, _ in ALL:
                self._check_services(each)
            python_speed()  # before the run loads the machine: its reports name the speed taken here
            return self._all(options)
        self._check_services(name)
        python_speed()
        function, _, arguments = BENCHMARKS[name]
        keys = [option.lstrip("-").replace("-", "_") for option, *_ in arguments]
        out = (lambda line: None) if options["json"] else self.stdout.write
        try:
            figures = function(**{key: options[key] for key in keys}, out=out)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps([f.as_dict() for f in figures], indent=2))
        else:
            for figure in figures:
                self.stdout.write(figure.line())
        command = "python manage.py " + " ".join(sys.argv[1:])
        for path in options["write"] if name in ("scale", "e2e") else []:  # admin writes its own (--write)
            if name == "scale":
                scale.write_section(path, scale.section(figures, command))
            else:
                e2e.write_section(path, figures, command)
            out(f"bench: wrote the {name} section of {path}")

    def _check_services(self, name):
        kafka, redis = settings.FOG_KAFKA_BOOTSTRAP, settings.FOG_CLOUD_REDIS_URL
        where = {"kafka": ("Kafka", "FOG_KAFKA_BOOTSTRAP", kafka, split_hostport(kafka)),
                 "redis": ("Redis", "FOG_CLOUD_REDIS_URL", redis, redis_hostport(redis))}
        for service in NEEDS.get(name, ()):
            label, setting, value, (host, port) = where[service]
            if not port_open(host, port):
                raise CommandError(f"bench {name} needs the {label} at {value} ({setting}), and nothing answers "
                                   "there: start the project's services with `python manage.py services up`")

    def _all(self, options):
        out = (lambda line: None) if options["json"] else self.stdout.write
        sections = {}
        for number, (name, overrides) in enumerate(ALL):
            function, _, arguments = BENCHMARKS[name]
            defaults = {option.lstrip("-").replace("-", "_"): default for option, _, default, _ in arguments}
            try:
                sections[(number, name)] = figures = function(**{**defaults, **overrides}, out=out)
            except RuntimeError as exc:
                raise CommandError(f"bench {name}: {exc}") from None
            for figure in figures:
                out(figure.line())
        if options["write"]:
            from pathlib import Path

            from tooling.bench.admin import keep_section
            from tooling.bench.report import markdown

            target = Path(options["write"])
            target.parent.mkdir(parents=True, exist_ok=True)
            text = markdown(sections, "make bench   # = python manage.py bench all --write docs/BENCHMARKS.md", NOTES)
            old = target.read_text() if target.exists() else ""
            text = keep_section(old, text)
            measured = {name: [f for (_, n), fs in sections.items() if n == name for f in fs] for name in ("e2e", "scale")}
            for kind in e2e.all_kinds():  # then this run's e2e replaces its kind; a capacity search's stays
                text = carry_generated(old, text, *e2e.markers(kind))
            if measured["scale"]:
                text = (text.rstrip("\n") + "\n\n## Scale (`bench scale`)\n\n"
                        + scale.section(measured["scale"], "make bench") + "\n")
            target.write_text(text)
            if measured["e2e"]:
                e2e.write_section(target, measured["e2e"], "make bench")
            out(f"bench: wrote {options['write']}")
            scaling = Path(options["write"]).parent / "SCALING.md"  # its figures are this run's too
            if measured["scale"] and scaling.exists():
                scale.write_section(scaling, scale.section(measured["scale"], "make bench"))
                out(f"bench: wrote the scale section of {scaling}")
        if options["json"]:
            self.stdout.write(json.dumps([f.as_dict() for figures in sections.values() for f in figures], indent=2))

