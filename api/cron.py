"""Cron expressions of scheduled audits: checking them and finding the next run.

HTTP-free, so the API (which refuses a bad expression with 422) and the beat (which moves
a schedule to its next run) share one reading of an expression. Expressions have five
fields (minute hour day-of-month month day-of-week) and are read in UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from api.db import as_utc, utcnow
from explain.errors import XauditError

#: Characters a cron field may hold: numbers, names (jan, mon), ``*``, ``,``, ``-``, ``/``.
#: croniter also accepts hashed (``H``) and random (``R``) fields and ``#``/``?``; they are
#: refused so a schedule means the same thing to every reader.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/\-]+$")
_CRON_EXTENSIONS = re.compile(r"(^|[^a-z])[hr]([^a-z]|$)", re.IGNORECASE)
#: A schedule must fire at least once in this long: "0 0 30 2 *" (February 30th) never does.
MAX_GAP = timedelta(days=366 * 5)


class CronError(XauditError):
    """A cron expression was refused."""

    code = "bad_cron"
    status = 422


def next_run(cron: str, after: datetime) -> datetime:
    """The first cron time strictly after ``after`` (UTC)."""
    return croniter(cron, as_utc(after)).get_next(datetime)


def validate_cron(cron: str, now: datetime | None = None) -> str:
    """The expression with its whitespace normalised.

    Five fields only: a sixth (seconds) field would let one tenant start an audit every
    second and flood the workers; once a minute is the finest a schedule can ask for.

    Raises
    ------
    CronError
        Saying what is wrong with the expression.
    """
    cron = " ".join(str(cron).split())
    fields = cron.split(" ")
    if len(fields) != 5:
        raise CronError(f"cron must have five fields (minute hour day month weekday), got "
                        f"{len(fields)}: seconds fields, @aliases and years are not accepted")
    if not all(_CRON_FIELD.match(f) for f in fields) or _CRON_EXTENSIONS.search(cron):
        raise CronError("cron fields may hold numbers, month and weekday names, "
                        "'*', ',', '-' and '/' only")
    try:
        valid = croniter.is_valid(cron)
    except (CroniterBadCronError, ValueError, KeyError):
        valid = False
    if not valid:
        raise CronError(f"{cron!r} is not a valid cron expression "
                        "(minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-7)")
    now = now or utcnow()
    try:
        first = next_run(cron, now)
    except (CroniterBadDateError, CroniterBadCronError, ValueError):
        raise CronError(f"{cron!r} never fires (a day that no month has?)") from None
    if first - now > MAX_GAP:
        raise CronError(f"{cron!r} fires less than once every five years")
    return cron
