"""Synthetic households: power readings from a standard load profile, with noise and appliance spikes.

Synthetic households are stateless functions of (seed, household, time):
the same seed gives the same values in any process, whatever the number of
households, and no per-household state grows with the run.
"""

import math

# A typical German household's day (standard load profile H0, hourly, as
# multiples of the day's mean): low at night, a morning and an evening peak.
DAY_SHAPE = [0.55, 0.48, 0.45, 0.44, 0.45, 0.52, 0.75, 1.05, 1.10, 1.00, 0.95, 1.00,
             1.15, 1.10, 0.98, 0.92, 0.95, 1.10, 1.40, 1.65, 1.60, 1.45, 1.10, 0.75]
MEAN_POWER_W = 350.0  # about 3,100 kWh a year
NOISE = 0.12  # relative, per reading
SPIKE_CHANCE = 0.01  # an appliance switching on (kettle, oven) in a given reading
SPIKE_W = 1800.0

MASK = (1 << 64) - 1


def _mix(x):
    """splitmix64's finaliser: a fast, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def _unit(x):
    return (x >> 11) * (1.0 / (1 << 53))


# Minute-by-minute shape, linearly interpolated from the hourly profile.
_MINUTE_SHAPE = [DAY_SHAPE[m // 60] + (DAY_SHAPE[(m // 60 + 1) % 24] - DAY_SHAPE[m // 60]) * (m % 60) / 60
                 for m in range(1440)]


_TWO_26_INV = 1.0 / (1 << 26)
_SPIKE_BELOW = int(SPIKE_CHANCE * 4096)


class SyntheticHousehold:
    __slots__ = ("household", "key", "scale", "shift_minutes")

    def __init__(self, seed, index):
        self.household = f"syn{seed}-{index:06d}"
        self.key = _mix((seed & MASK) * 1_000_003 + index)
        # Households differ in size (a log-normal-ish spread, 0.4x..2.5x) and in rhythm (+-60 min).
        spread = _unit(_mix(self.key ^ 1)) + _unit(_mix(self.key ^ 2)) - 1.0
        self.scale = MEAN_POWER_W * math.exp(0.45 * spread * 2)
        self.shift_minutes = int((_unit(_mix(self.key ^ 3)) - 0.5) * 120)

    def power(self, ts_ms, local_minute):
        """Watts at event time `ts_ms`; `local_minute` is the minute of the local day.

        One splitmix64 hash a reading: its high bits make the noise (two
        uniforms summed, a triangular spread), its low 12 bits the spike.
        """
        x = ((self.key ^ ts_ms) + 0x9E3779B97F4A7C15) & MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
        r = x ^ (x >> 31)
        noise = (((r >> 38) + ((r >> 12) & 0x3FFFFFF)) * _TWO_26_INV - 1.0) * NOISE
        value = self.scale * _MINUTE_SHAPE[(local_minute + self.shift_minutes) % 1440] * (1.0 + noise)
        if (r & 0xFFF) < _SPIKE_BELOW:
            value += SPIKE_W
        return value
