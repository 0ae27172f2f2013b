"""A JSON parser for request bodies with bounds: nesting depth, number length, strict JSON.

Python's ``json`` recurses once per nesting level (a body nested 1,000 deep raises
``RecursionError``), converts digit strings of any length to ``int`` (a 5,000-digit
integer raises ``ValueError`` from the interpreter's int-size guard). Each used to
surface as a 500. (``NaN``/``Infinity`` literals still parse: the endpoints refuse
non-finite numbers with their own 422 ``non_finite``.) This provider parses with
the standard decoder but refuses, as a 400 ``bad_json``:

- numbers written with more than :data:`MAX_NUMBER_CHARS` characters;
- nesting deeper than :data:`MAX_DEPTH` (checked after parsing, iteratively; a body too
  deep for the decoder's own recursion is refused the same way).

Installed on the app by :func:`init_app`: Flask's ``request.get_json`` goes through it,
and a ``before_request`` hook checks every JSON body with it first, because apiflask's
request parser (webargs) calls ``json.loads`` itself. A body that passes the check parses
the same way there.
"""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "BadJSON", "GuardedJSONProvider", "init_app",
           "loads"]

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 64


class BadJSON(BadRequest):
    """A request body that is not acceptable JSON (400 ``bad_json``)."""

    def __init__(self, message: str):
        super().__init__(description=message)
        self.code_name = "bad_json"


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadJSON(f"a number in the body has {len(text)} characters; at most "
                      f"{MAX_NUMBER_CHARS}")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadJSON(f"a number in the body has {len(text)} characters; at most "
                      f"{MAX_NUMBER_CHARS}")
    return float(text)


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadJSON(f"the body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values()
                         if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))


def loads(data: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` within the bounds above; :class:`BadJSON` otherwise."""
    kwargs.setdefault("parse_int", _int)
    kwargs.setdefault("parse_float", _float)
    try:
        value = json.loads(data, **kwargs)
    except RecursionError:
        raise BadJSON(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except BadJSON:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJSON(f"the body is not valid JSON: {str(exc)[:200]}") from None
    _check_depth(value)
    return value


class GuardedJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s, **kwargs)


def init_app(app) -> None:
    from flask import request

    from api.errors import abort

    app.json = GuardedJSONProvider(app)

    @app.before_request
    def _guard_json_body():
        if not request.is_json:
            return
        data = request.get_data(cache=True)
        if not data:
            return
        try:
            loads(data)
        except BadJSON as exc:
            abort(400, "bad_json", exc.description)
