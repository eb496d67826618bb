import argparse
import logging
import signal
import sys

from django.conf import settings
from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError

from fogwire.limits import MAX_READINGS_PER_MESSAGE
from fogwire.stopsignals import stop_signals
from simulation.producer import CLIENTS, STOP_FLUSH_S, KafkaUnavailable
from simulation.scenario import MAX_SEED, MAX_SYNTHETIC_HOUSEHOLDS, Options, run
from simulation.sources import SKIPPED_SHOWN, DataError
from simulation.spread import SLICE_MS

LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


def speed(text):
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed takes a positive number or 'max', got {text!r}") from None
    return value


def readings_per_message(text):
    value = int(text) if text.strip().isdigit() else 0
    if not 1 <= value <= MAX_READINGS_PER_MESSAGE:
        raise argparse.ArgumentTypeError(f"--readings-per-message takes 1..{MAX_READINGS_PER_MESSAGE}, got {text!r}")
    return value


class Command(BaseCommand):
    # It serves no page and uses no database: the admin's, templates' and URLs' checks import every view and
    # template tag library (fogsite.checks.PIPELINE_CHECKS says more), a large share of its start's CPU.
    requires_system_checks = [Tags.compatibility, Tags.files, Tags.security, Tags.signals]
    help = ("Simulate households in a mosaik co-simulation and stream their power readings into Kafka, "
            "from Gem House CSV files (--data) or synthetic load profiles. SIGINT, SIGTERM or SIGHUP "
            "stops it cleanly: what was sent is flushed, the summary line says ended=SIGINT (or the other's name), "
            "exit status 0. "
            f"While Kafka is away a stop waits at most {STOP_FLUSH_S} s for it; the readings it did not take are "
            "counted as failed (exit status 1).")

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--data", metavar="DIR", help="folder of Gem House CSV files (household id = file "
                            "name without .csv), every .csv file a household (not read: hidden files, and other entries, "
                            "those that may hold a household named; a file linked under two names stops the run); "
                            "without it, synthetic households")
        source.add_argument("--households", type=int, default=10,
                            help=f"synthetic households, 1 to {MAX_SYNTHETIC_HOUSEHOLDS:,} (default %(default)s); "
                            "not with --data, whose files are the households")
        parser.add_argument("--until", type=float, default=None, metavar="SECONDS",
                            help="simulated seconds to run, 1 to a century (default: the files' span, or 3600 for synthetic)")
        parser.add_argument("--speed", type=speed, default=None, metavar="X|max",
                            help="1 = real time, 60 = a minute per second, max = as fast as possible (default max); a run "
                            "whose last readings would go out over a day ahead of the clock is refused")
        parser.add_argument("--step", type=int, default=2, help="seconds per step; synthetic households send one "
                            "reading a step (default %(default)s, like the real files)")
        parser.add_argument("--seed", type=int, default=0,
                            help=f"seed of the synthetic households, 0 to {MAX_SEED} (default %(default)s)")
        parser.add_argument("--start", default="2019-12-24 00:00:00",
                            help="event time of the first synthetic reading, in --tz unless it has an offset of its "
                            "own (2019-12-24T00:00:00+00:00), or 'now' "
                            "(default %(default)s, the sample files' day)")
        parser.add_argument("--tz", default="Europe/Berlin", help="time zone of CSV dates and --start (default %(default)s)")
        parser.add_argument("--topic", default=settings.FOG_TOPIC, help="Kafka topic (default FOG_TOPIC, %(default)s)")
        parser.add_argument("--bootstrap", default=settings.FOG_KAFKA_BOOTSTRAP,
                            help="Kafka bootstrap address (default FOG_KAFKA_BOOTSTRAP, %(default)s)")
        parser.add_argument("--client", choices=sorted(CLIENTS), default="confluent",
                            help="Kafka client library (default %(default)s; see simulation/producer.py)")
        parser.add_argument("--readings-per-message", type=readings_per_message, default=MAX_READINGS_PER_MESSAGE, metavar="N",
                            help="readings in one Kafka message: each step's readings go in batches of up to N, "
                            "one a partition, a household always in the partition its id as a key would choose "
                            f"(default and most {MAX_READINGS_PER_MESSAGE}); 1 = a message a reading, keyed by "
                            "household (an edge reads both; not an edge run with --legacy-input)")
        parser.add_argument("--build-ahead", choices=("on", "off"), default="on",
                            help="with a --speed other than max: on (default) builds each step a little before it "
                            "is due on the run's clock (1.5 times as long as the last steps took to build, at most "
                            "half a step) and sends it when due, with --speed 1 --start now at the moment its "
                            "readings carry; off builds a step when it is due and sends it once built, as long "
                            "after as building every household's reading and passing them through mosaik takes")
        parser.add_argument("--spread", choices=("on", "off"), default="off",
                            help="with a --speed other than max: on gives each synthetic household a moment of its "
                            f"own in every step ({SLICE_MS} ms apart: household n reads at n modulo the step's "
                            "moments) and sends each reading at the moment it carries (a file's reading at the last "
                            f"{SLICE_MS} ms mark not after its time; on a stop, what a step still holds at once), a "
                            "steady stream instead of a burst a step; off (default) stamps every synthetic reading "
                            "of a step with the step's start and sends the whole step at once (`bench e2e --baseline "
                            "spread-readings` measures the two)")
        parser.add_argument("--skip-bad-lines", action="store_true",
                            help="count and skip malformed CSV lines instead of stopping at the first; each is named in a "
                            f"warning (file:line: what is wrong), the first {SKIPPED_SHOWN} of a file, then a count "
                            "(skipped_lines= in the summary)")
        parser.add_argument("--skip-bad-files", action="store_true",
                            help="set aside a file of --data that can't be read whole as asked (no header lines, no "
                            "reading, unreadable, not a file, a name that is no household id, or a bad line without "
                            "--skip-bad-lines) and send the others, instead of stopping before anything is sent; "
                            f"each is named in a warning, the first {SKIPPED_SHOWN}, then a count (skipped_files= in "
                            "the summary). Two files of one household still stop the run")
        parser.add_argument("--collect", action="store_true",
                            help="print a per-household summary (count, min, mean, max W) at the end")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")

    def handle(self, *args, **o):
        logging.getLogger("fog").setLevel(LOG_LEVELS.get(o["verbosity"], logging.INFO))
        _quiet_mosaik()
        options = Options(until=o["until"], speed=o["speed"], households=o["households"], data=o["data"],
                          step=o["step"], seed=o["seed"], start=o["start"], tz=o["tz"], topic=o["topic"],
                          bootstrap=o["bootstrap"], client=o["client"], per_message=o["readings_per_message"],
                          build_ahead=o["build_ahead"] == "on", spread=o["spread"] == "on",
                          skip_bad_lines=o["skip_bad_lines"], skip_bad_files=o["skip_bad_files"],
                          collect=o["collect"], progress=sys.stderr.isatty() and not o["no_progress"],
                          full_gc_seconds=settings.FOG_FULL_GC_SECONDS)
        stopped = []

        def on_signal(signum, frame):
            stopped.append(signal.Signals(signum).name)  # the handler only sets the flag

        for signum in stop_signals():
            signal.signal(signum, on_signal)
        try:
            result = run(options, stop_flag=lambda: stopped[0] if stopped else None)
        except (DataError, KafkaUnavailable) as exc:
            raise CommandError(str(exc)) from None
        if result.summary:
            self.stdout.write(f"{'household':<70} {'count':>7} {'min W':>9} {'mean W':>9} {'max W':>9}")
            for household, (count, low, total, high) in sorted(result.summary.items()):
                self.stdout.write(f"{household:<70} {count:>7} {low:>9.1f} {total / count:>9.1f} {high:>9.1f}")
        self.stdout.write(result.line())
        if result.failed:
            raise CommandError(f"{result.failed} readings were not confirmed by Kafka (first error: {result.first_error})")


def _quiet_mosaik():
    """mosaik logs through loguru at DEBUG by default; keep its warnings only."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
