import logging
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fogsite.checks import PIPELINE_CHECKS
from tooling.bench.common import python_speed
from tooling.chaos.lanes import MAX_LANES, LaneRunner, NotRun, schedule
from tooling.chaos.report import markdown
from tooling.chaos.scenarios import SCENARIOS
from tooling.signals import stop_on_signals


class Command(BaseCommand):
    requires_system_checks = PIPELINE_CHECKS
    help = ("Run the fault matrix: the real pipeline as real processes, one fault per scenario, then "
            "reconcile. Exits 1 if any window was lost or duplicated.")

    def add_arguments(self, parser):
        parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario (default %(default)s)")
        parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                            help="run only this scenario (may be given several times; default: all)")
        parser.add_argument("--cut-seconds", type=float, default=30, help="length of the link cut (default %(default)s)")
        parser.add_argument("--outage-seconds", type=float, default=600,
                            help="budget-outage: simulated seconds the cloud is away (default %(default)s)")
        parser.add_argument("--households", type=int, default=300, help="simulated households (default %(default)s)")
        parser.add_argument("--until", type=int, default=900, help="simulated seconds of the stream (default "
                            "%(default)s); repeated-crash streams until its last crash instead")
        parser.add_argument("--speed", type=float, default=30, help="simulation speed (default %(default)s)")
        parser.add_argument("--lanes", type=int, default=1, choices=range(1, MAX_LANES + 1), metavar="N",
                            help="run N scenarios at once, each lane with a Kafka broker, a cloud Redis and an "
                                 "edge Redis database of its own, the longest scenarios first (1 to "
                                 f"{MAX_LANES}; default %(default)s: one after the other, in the matrix's order)")
        parser.add_argument("--write", metavar="PATH", help="write the table to this Markdown file "
                            "(e.g. docs/RELIABILITY.md)")

    def handle(self, *args, **options):
        logging.getLogger("fog").setLevel(logging.WARNING)
        stop_on_signals(self.stdout.write)  # SIGTERM and SIGHUP like Ctrl-C: the finally below stops our services
        names = options["scenario"] or list(SCENARIOS)
        python_speed()  # before the scenarios load the machine: the report names the speed taken here
        run_options = {"cut_seconds": options["cut_seconds"], "outage_seconds": options["outage_seconds"],
                       "households": options["households"],
                       "until": options["until"], "speed": options["speed"]}
        lanes = options["lanes"]
        self.stdout.write("chaos: starting a Kafka broker and a cloud Redis of its own" if lanes == 1 else
                          f"chaos: starting {lanes} lanes, each with a Kafka broker and a cloud Redis of its own")
        jobs = schedule(names, run_options, options["repeat"], lanes)
        with LaneRunner(jobs, Path(settings.VAR_DIR) / "kafka" / "libs", settings.FOG_EDGE_REDIS_URL, lanes,
                        out=self.stdout.write) as runner:
            try:
                outcomes = [runner.outcome(job) for job in jobs]
            except NotRun as exc:
                raise CommandError(str(exc)) from exc
        if options["write"]:
            command = (f"make chaos REPEAT={options['repeat']}" if not options["scenario"] and lanes == 1 else
                       "python manage.py chaos " + " ".join(
                           [f"--repeat {options['repeat']}"] + ([f"--lanes {lanes}"] if lanes > 1 else [])
                           + [f"--scenario {n}" for n in options["scenario"] or []]))
            Path(options["write"]).parent.mkdir(parents=True, exist_ok=True)
            target = Path(options["write"])
            # A subset of the scenarios keeps the other scenarios' rows from the report already there.
            previous = target.read_text() if options["scenario"] and target.exists() else ""
            target.write_text(markdown(outcomes, command, run_options, previous))
            self.stdout.write(f"chaos: wrote {options['write']}")
        failed = [o for o in outcomes if not o.ok]
        if failed:
            raise CommandError(f"{len(failed)} of {len(outcomes)} runs lost or duplicated windows, or did not recover")
        self.stdout.write(f"chaos: {len(outcomes)} runs, 0 lost, 0 duplicated")
