"""Which failures a task retries, and how long it waits: the database or the broker
blinked. Everything else is either the user's input (an ``XauditError``, recorded with
its code) or a bug (recorded as ``internal_error``; see :func:`api.lifecycle.classify`)."""

from __future__ import annotations

from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import InterfaceError
from sqlalchemy.exc import OperationalError as DBOperationalError

TRANSIENT = (DBOperationalError, InterfaceError, KombuOperationalError, ConnectionError)
MAX_TRANSIENT_RETRIES = 5


def backoff(retries: int) -> float:
    """Seconds before retry number ``retries`` (0-based): 1, 2, 4, … up to a minute."""
    return float(min(60, 2 ** retries))
