"""Unicode security rules for usernames: Unicode Technical Standard #39 (TR39).

A name must not hide characters, must not mix scripts beyond TR39's "highly
restrictive" level, and its confusable skeleton is what keeps look-alike names
apart. The Unicode data (script extensions, confusables, default-ignorable code
points) and the algorithms come from ICU's spoof checker, through PyICU, so they
follow the Unicode releases ICU ships rather than tables of our own.
"""

from __future__ import annotations

from functools import cache

import icu

INVISIBLE_RULE = "must not contain invisible, filler or default-ignorable characters"
SCRIPT_RULE = (
    "must be written in one script, or in Latin with Chinese, Japanese or Korean"
)
DIGITS_RULE = "must not mix digits of different scripts"


def username_problem(name: str) -> str | None:
    """Why TR39 refuses this NFKC-normalised name, or None when it does not."""
    if _invisible().containsSome(name):
        return INVISIBLE_RULE
    failed = _checker().check(name)
    if failed & icu.USpoofChecks.RESTRICTION_LEVEL:
        return SCRIPT_RULE
    if failed & icu.USpoofChecks.MIXED_NUMBERS:
        return DIGITS_RULE
    return None


def skeleton(key: str) -> str:
    """The TR39 skeleton of a name's canonical key: equal for look-alike names.

    Names compare case-insensitively, so the skeleton is taken of the case-folded
    key (TR39 section 4), and "rtadmin" with a Cyrillic "a" (U+0430) meets
    "rtadmin".
    """
    return str(_checker().getSkeleton(0, key))


@cache
def _checker() -> icu.SpoofChecker:
    # Built once per process; ICU's checks are safe to run from several threads.
    checker = icu.SpoofChecker()
    checker.setRestrictionLevel(icu.URestrictionLevel.HIGHLY_RESTRICTIVE)
    checker.setChecks(
        icu.USpoofChecks.RESTRICTION_LEVEL | icu.USpoofChecks.MIXED_NUMBERS
    )
    return checker


@cache
def _invisible() -> icu.UnicodeSet:
    # ICU's own INVISIBLE check looks only for repeated combining marks; Hangul
    # fillers and zero-width characters are default-ignorable code points.
    invisible = icu.UnicodeSet("[:Default_Ignorable_Code_Point:]")
    invisible.freeze()
    return invisible
