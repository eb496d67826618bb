"""docs/RELIABILITY.md from the outcomes of `manage.py chaos`."""

from collections import defaultdict
from datetime import date

from tooling.chaos.scenarios import SCENARIOS
from tooling.bench.common import machine


def _kept(previous, runs):
    """From an earlier report: the table rows, notes and commands of scenarios this run did not repeat."""
    rows, notes, commands, block = [], [], [], False
    for line in previous.splitlines():
        if line.startswith("```"):
            block = not block
        elif block and line.strip():
            commands.append(line)
        for name in SCENARIOS:
            if name not in runs and (line.startswith(f"| {name} |") or line.startswith(f"- {name}, run ")):
                (rows if line.startswith("|") else notes).append(line)
    return rows, notes, commands


def markdown(outcomes, command, options, previous=""):
    """The report; with `previous` (an earlier report), scenarios not run now keep their earlier rows."""
    runs = defaultdict(list)
    for outcome in outcomes:
        runs[outcome.scenario].append(outcome)
    lines = [
        "# Reliability",
        "",
        "The promise: when the cloud, the edge or the link fails, every 5 s window the edge computed is",
        "acknowledged exactly once in the cloud, and no acknowledged tuple is ever missing. Each scenario runs",
        "the real pipeline as real processes (a Kafka broker and a cloud Redis of the harness's own, `runcloud`,",
        "`runedge` with its RQ workers, `runsimulation`), injects one fault, waits until every window is",
        "acknowledged and runs `manage.py reconcile --strict`.",
        "",
        f"Measured on {date.today().isoformat()}, {machine()}; {options['households']} synthetic households x "
        f"{options['until']} simulated s "
        f"at {options['speed']:g}x (a scenario produces {options['households'] * options['until'] // 2:,} readings, "
        f"{options['households'] * options['until'] // 5:,} windows; backlog-restart starts from 100,000 PENDING tuples, "
        "and repeated-crash streams until its last crash is over).",
        "",
        "| scenario | what happens | runs | windows (all runs) | lost | duplicated | slowest recovery (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    kept_rows, kept_notes, commands = _kept(previous, runs) if previous else ([], [], [])
    for name, function in SCENARIOS.items():
        if name not in runs:
            lines += [row for row in kept_rows if row.startswith(f"| {name} |")]
            continue
        done = runs[name]
        recoveries = [o.recovery_s for o in done if o.recovery_s is not None]
        slowest = f"{max(recoveries):.1f}" if len(recoveries) == len(done) else "did not recover"
        what = function.__doc__.strip().rstrip(".")
        lines.append(f"| {name} | {what} | {len(done)} | {sum(o.windows for o in done):,} | "
                     f"{sum(o.lost for o in done)} | {sum(o.duplicated for o in done)} | {slowest} |")
    lines += [
        "",
        "Recovery: seconds from lifting the fault until a window stored after it is acknowledged (if none was",
        "stored after it, until acknowledgements resume) and the backlog is back to what is normally in flight",
        "(at most 2,000 tuples).",
        "",
    ]
    notes = kept_notes + [f"- {o.scenario}, run {i}: {o.notes}" for name, done in runs.items()
                          for i, o in enumerate(done, 1) if o.notes]
    if notes:
        lines += sorted(notes, key=lambda line: list(SCENARIOS).index(line[2:].split(",")[0])) + [""]
    if kept_rows:
        lines += ["Rows of scenarios this run did not repeat are kept from the earlier run (the first command",
                  "below).", ""]
    lines += ["Reproduce:", "", "```sh", *[c for c in commands if c != command], command, "```", ""]
    failures = [o for o in outcomes if not o.ok]
    if failures:
        lines += ["Failures:", ""] + [f"- {o.scenario}: lost {o.lost}, duplicated {o.duplicated}. {o.detail}"
                                       for o in failures] + [""]
    return "\n".join(lines)
