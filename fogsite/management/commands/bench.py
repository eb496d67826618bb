import json
import logging

from django.core.management.base import BaseCommand, CommandError

from fogsite.bench import cloud

BENCHMARKS = {
    "cloud": (cloud.run, "the cloud alone: batch decode, verify, Redis write, reply (target >= 100,000 tuples/s)"),
}


class Command(BaseCommand):
    help = ("Run a benchmark against the real local broker, Redis and pynng sockets, and print its figure "
            "next to a naive baseline measured in the same run.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
        cloud_parser = sub.add_parser("cloud", help=BENCHMARKS["cloud"][1])
        cloud_parser.add_argument("--tuples", type=int, default=100_000, help="tuples to store (default %(default)s)")
        cloud_parser.add_argument("--batch", type=int, default=1000, help="tuples a request (default %(default)s)")
        cloud_parser.add_argument("--in-flight", type=int, default=4, help="requests at once (default %(default)s)")
        cloud_parser.add_argument("--baseline-tuples", type=int, default=2000,
                                  help="tuples sent one a request for the baseline (default %(default)s)")
        for p in sub.choices.values():
            p.add_argument("--json", action="store_true", help="print the figures as JSON")

    def handle(self, *args, name, **options):
        logging.getLogger("fog").setLevel(logging.WARNING if options["verbosity"] < 2 else logging.DEBUG)
        as_json = options.pop("json")
        run = BENCHMARKS[name][0]
        keys = {"cloud": ("tuples", "batch", "in_flight", "baseline_tuples")}[name]
        try:
            figures = run(**{k: options[k] for k in keys}, out=(lambda line: None) if as_json else self.stdout.write)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        if as_json:
            self.stdout.write(json.dumps([f.as_dict() for f in figures], indent=2))
        else:
            for figure in figures:
                self.stdout.write(figure.line())
