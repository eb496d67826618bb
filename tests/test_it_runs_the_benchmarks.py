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
