"""Benchmarks are not tests: this only proves each still runs, at a small size."""

import json

import pytest

from tests.conftest import run_manage

SMALL = {
    "cloud": ["--tuples", "3000", "--baseline-tuples", "50"],
    "drain": ["--tuples", "3000", "--baseline-tuples", "50"],
    "ingest": ["--readings", "5000", "--households", "50", "--baseline-readings", "500"],
    "simulate": ["--households", "200", "--until", "20", "--baseline-readings", "50"],
    "realtime": ["--households", "100", "--until", "3"],
    "latency": ["--households", "20", "--seconds", "8"],
    "api": ["--tuples", "5000", "--households", "100", "--clients", "2", "--requests", "20", "--baseline-calls", "1"],
    "admin": ["--tuples", "3000", "--households", "50", "--requests", "2", "--baseline-requests", "1"],
}


@pytest.mark.parametrize("name", SMALL)
def test_it_runs_the_benchmark_and_prints_a_figure_beside_its_baseline(services, name):
    result = run_manage("bench", name, *SMALL[name], "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures and all(f["value"] > 0 for f in figures)
    assert all(f["baseline"] is None or f["baseline"] > 0 for f in figures)


def test_it_takes_json_before_the_benchmark_name_too(services):
    result = run_manage("bench", "--json", "cloud", *SMALL["cloud"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["value"] > 0  # JSON alone on stdout, no progress lines


def test_it_writes_the_admin_table_into_its_own_section_and_keeps_the_others(services, tmp_path):
    from tooling.bench.admin import keep_section

    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n| bench all's table |\n\n<!-- bench admin: begin -->\n"
                      "<!-- bench admin run: postgres 10000000 -->\n| an earlier postgres run |\n"
                      "<!-- bench admin: end -->\n")
    result = run_manage("bench", "admin", "--tuples", "2000", "--households", "20", "--requests", "2",
                        "--baseline-requests", "1", "--write", str(target), timeout=300)
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert "| bench all's table |" in text and "| an earlier postgres run |" in text
    assert "**sqlite, 2,000 tuples**" in text and "| tuple list |" in text
    assert text.count("<!-- bench admin: begin -->") == 1 and text.count("<!-- bench admin: end -->") == 1
    rewritten = keep_section(text, "# Benchmarks\n\n| a new bench all table |\n")
    assert "| a new bench all table |" in rewritten and "**sqlite, 2,000 tuples**" in rewritten
    assert "| bench all's table |" not in rewritten
