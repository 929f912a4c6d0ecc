"""Seeds derived, never drawn: every job's seed is a pure function of the params seed and the job's place
(an outer fold, a trial, a study's arm), so a job gives the same numbers in any order and on any worker."""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(seed: int, *parts: Any) -> int:
    """A seed for one job, derived (not drawn) from the params seed and the job's place in the design."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


__all__ = ["derive_seed"]
