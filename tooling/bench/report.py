"""docs/BENCHMARKS.md from a `bench all` run."""

from datetime import date

from tooling.bench.common import machine, reproduce


def markdown(sections, command, notes):
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {date.today().isoformat()}: {machine()}, against the local Kafka broker, Redis and pynng "
        "sockets that "
        "`make services` starts. The machine is shared and noisy: each figure stands next to a baseline measured in "
        "the same run that differs from it in one thing (named in its details), and the gain, how many times better "
        "the figure is than that baseline, is what carries over.",
        "",
        *reproduce(command),
        "| benchmark | figure | baseline (same run) | gain | target | details |",
        "|---|---|---|---|---|---|",
    ]
    for figure in (f for figures in sections.values() for f in figures):
        baseline = f"{figure.baseline:,.1f} {figure.unit}" if figure.baseline else "-"
        ratio = f"x{figure.ratio:,.1f}" if figure.ratio else "-"
        details = figure.details()
        lines.append(f"| {figure.name} | {figure.value:,.1f} {figure.unit} | {baseline} | {ratio} | {figure.target} "
                     f"| {details} |")
    lines += ["", *notes, ""]
    for figure in (f for figures in sections.values() for f in figures if f.profile):
        lines += [f"### {figure.name}", "", "```text", figure.profile.strip(), "```", ""]
    return "\n".join(lines)
