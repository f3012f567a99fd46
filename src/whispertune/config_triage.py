"""Checks of the data triage settings (`data.min_chars_per_second`, `data.max_chars_per_second`,
`data.drop_flagged`; data/triage.py), called by `config.validate`."""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError


def check_triage(data: Any) -> None:
    """`data` is the config's DataConfig (not imported: config.py imports this module)."""
    low, high = data.min_chars_per_second, data.max_chars_per_second
    if not (math.isfinite(low) and low >= 0):
        raise ConfigError(f"data.min_chars_per_second: got {low}, expected a number >= 0 (0 checks no lower bound)")
    if not (math.isfinite(high) and high > low):
        raise ConfigError(f"data.max_chars_per_second: got {high}, expected a finite number above "
                          f"data.min_chars_per_second ({low}); e.g. 35")
    if data.drop_flagged and data.streaming:
        raise ConfigError("data.drop_flagged: a streamed training split (data.streaming: true) is not triaged "
                          "before training; run `whispertune data check` on it and fix the source, or drop "
                          "data.drop_flagged")
