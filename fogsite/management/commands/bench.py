import json
import logging

from django.core.management.base import BaseCommand, CommandError

from fogsite.bench import api, cloud, edge, simulate


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
    "cloud": (cloud.run, "the cloud alone: decode, verify, Redis write, reply (target >= 100,000 tuples/s)", [
        ("--tuples", int, 100_000, "tuples to store"),
        ("--batch", int, 1000, "tuples a request"),
        ("--in-flight", int, 4, "requests at once"),
        ("--baseline-tuples", int, 2000, "tuples sent one a request for the baseline"),
    ]),
    "drain": (edge.run_drain, "a PENDING backlog edge -> real cloud until all ACKED (target >= 50,000 tuples/s)", [
        ("--tuples", sizes, [100_000], "backlog size(s), comma-separated to see the growth, e.g. 10000,100000,1000000"),
        ("--batch", int, 1000, "tuples a request"),
        ("--in-flight", int, 4, "requests at once"),
        ("--baseline-tuples", int, 1000, "tuples sent one request + one commit each for the baseline"),
    ]),
    "ingest": (edge.run_ingest, "Kafka readings -> closed windows stored (target >= 50,000 readings/s)", [
        ("--readings", int, 500_000, "readings to produce and ingest"),
        ("--households", int, 1000, "households they come from"),
        ("--baseline-readings", int, 20_000, "readings processed one by one, a commit per window, for the baseline"),
    ]),
    "simulate": (simulate.run_simulate, "runsimulation --speed max into Kafka (target >= 100,000 readings/s)", [
        ("--households", sizes, [10_000], "household count(s), comma-separated, e.g. 1000,10000,50000"),
        ("--until", int, 60, "simulated seconds"),
        ("--baseline-readings", int, 2000, "readings sent one produce + flush each for the baseline"),
    ]),
    "realtime": (simulate.run_realtime, "runsimulation --speed 1 at a 1 s step: largest lag (target < 1 s)", [
        ("--households", int, 10_000, "households"),
        ("--until", int, 60, "seconds of real time"),
    ]),
    "api": (api.run, "/api/states/ p50/p99 under concurrent clients, many tuples stored (target p99 <= 20 ms)", [
        ("--tuples", int, 1_000_000, "tuples stored through the cloud's store first"),
        ("--households", int, 10_000, "households they belong to"),
        ("--clients", int, 8, "concurrent clients (threads of a second process)"),
        ("--requests", int, 250, "requests per client"),
        ("--baseline-calls", int, 2, "naive full scans timed for the baseline"),
    ]),
}


class Command(BaseCommand):
    help = ("Run a benchmark against the real local broker, Redis and pynng sockets, and print its figure "
            "next to a naive baseline measured in the same run. Benchmarks are not tests.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
        for name, (_, text, arguments) in BENCHMARKS.items():
            child = sub.add_parser(name, help=text, description=text)
            for option, kind, default, option_help in arguments:
                child.add_argument(option, type=kind, default=default, help=f"{option_help} (default %(default)s)")
            child.add_argument("--json", action="store_true", help="print the figures as JSON")

    def handle(self, *args, name, **options):
        logging.getLogger("fog").setLevel(logging.WARNING if options["verbosity"] < 2 else logging.DEBUG)
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
