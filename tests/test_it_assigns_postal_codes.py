import subprocess
import sys

from cloud_app.postal import POSTAL_CODES, STATE_RANGES, STATES, locate
from fogwire.protocol import POSTAL_CODE_RE


def test_it_lists_codes_only_inside_their_states_ranges():
    assert len(STATES) == 16 and set(POSTAL_CODES) == set(STATES)
    for state, codes in POSTAL_CODES.items():
        assert len(set(codes)) == len(codes), f"{state} lists a code twice"
        for code in codes:
            assert POSTAL_CODE_RE.match(code), code
            assert any(lo <= int(code) <= hi for lo, hi in STATE_RANGES[state]), f"{code} is not in {state}"


def test_it_gives_each_household_a_code_inside_its_states_official_range():
    for i in range(2000):
        code, state = locate(f"household-{i}")
        assert any(lo <= int(code) <= hi for lo, hi in STATE_RANGES[state]), f"household-{i}: {code} not in {state}"


def test_it_spreads_households_over_all_sixteen_states():
    assert {locate(f"household-{i}")[1] for i in range(2000)} == set(STATES)


def test_it_gives_the_same_code_in_another_process():
    ids = [f"household-{i}" for i in range(50)] + ["00effd348b9c800790820fce60d86d4d56534be2ca3371f75da7e1d741c8caac"]
    script = "import sys; from cloud_app.postal import locate; print(' '.join(locate(h)[0] for h in sys.argv[1:]))"
    other = subprocess.run([sys.executable, "-c", script, *ids], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert other.stdout.split() == [locate(h)[0] for h in ids]
