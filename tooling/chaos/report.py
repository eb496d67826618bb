"""docs/RELIABILITY.md from the outcomes of `manage.py chaos`."""

from collections import defaultdict
from datetime import date

from tooling.chaos.scenarios import SCENARIOS
from tooling.bench.common import machine


def previous_rows(text):
    """The scenario rows and the reproduce commands of an existing RELIABILITY.md, to keep with --update."""
    rows, commands, in_sh = {}, [], False
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| scenario |"):
            rows[line.split("|")[1].strip()] = line
        elif line.startswith("```sh"):
            in_sh = True
        elif line.startswith("```"):
            in_sh = False
        elif in_sh and line.strip():
            commands.append(line.strip())
    return rows, commands


def markdown(outcomes, command, options, previous=None):
    """The whole document; `previous` (from previous_rows) keeps the rows of scenarios this run left out."""
    kept_rows, commands = previous or ({}, [])
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
        f"Measured on {date.today().isoformat()}, {machine()}; {options['households']} synthetic households x {options['until']} simulated s "
        f"at {options['speed']:g}x (a scenario produces {options['households'] * options['until'] // 2:,} readings, "
        f"{options['households'] * options['until'] // 5:,} windows; backlog-restart starts from 100,000 PENDING tuples).",
        *([f"The rows of {', '.join(sorted(set(kept_rows) - set(runs)))} are kept from the file's earlier run(s)."]
          if set(kept_rows) - set(runs) else []),
        "",
        "| scenario | what happens | runs | windows (all runs) | lost | duplicated | slowest recovery (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, function in SCENARIOS.items():
        if name not in runs:
            if name in kept_rows:
                lines.append(kept_rows[name])
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
        "Reproduce" + (" (the rows of scenarios a command did not run come from the commands before it, "
                       "with the same households, length and speed):" if kept_rows else ":"),
        "",
        "```sh",
        *[c for c in commands if c != command],
        command,
        "```",
        "",
    ]
    failures = [o for o in outcomes if not o.ok]
    if failures:
        lines += ["Failures:", ""] + [f"- {o.scenario}: lost {o.lost}, duplicated {o.duplicated}. {o.detail}"
                                       for o in failures] + [""]
    return "\n".join(lines)
