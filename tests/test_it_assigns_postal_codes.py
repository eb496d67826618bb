import math
import subprocess
import sys
from collections import Counter

from cloud_app.postal import POPULATION_THOUSANDS, POSTAL_CODES, STATE_RANGES, STATES, locate
from fogwire.protocol import POSTAL_CODE_RE


def test_it_lists_codes_only_inside_their_states_ranges():
    assert len(STATES) == 16 and set(POSTAL_CODES) == set(STATES)
    for state, codes in POSTAL_CODES.items():
        assert len(set(codes)) == len(codes), f"{state} lists a code twice"
        for code in codes:
            assert POSTAL_CODE_RE.fullmatch(code), code
            assert any(lo <= int(code) <= hi for lo, hi in STATE_RANGES[state]), f"{code} is not in {state}"


def test_it_places_households_in_proportion_to_each_states_population():
    """Bremen must not get as many households as Nordrhein-Westfalen: each state's count among
    100,000 households lies within four standard deviations of its population share (a fair pick
    fails this about once in 10^4 runs; it is deterministic anyway, so it never flickers)."""
    households = 100_000
    counts = Counter(locate(f"household-{i}")[1] for i in range(households))
    total = sum(POPULATION_THOUSANDS.values())
    for state in STATES:
        expected = households * POPULATION_THOUSANDS[state] / total
        assert abs(counts[state] - expected) <= 4 * math.sqrt(expected), (state, counts[state], round(expected))


def test_it_gives_the_same_code_in_another_process():
    ids = [f"household-{i}" for i in range(50)] + ["00effd348b9c800790820fce60d86d4d56534be2ca3371f75da7e1d741c8caac"]
    script = "import sys; from cloud_app.postal import locate; print(' '.join(locate(h)[0] for h in sys.argv[1:]))"
    other = subprocess.run([sys.executable, "-c", script, *ids], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert other.stdout.split() == [locate(h)[0] for h in ids]
