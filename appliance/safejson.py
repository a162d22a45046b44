"""JSON from outside (the web API's request bodies, the control socket's headers), with limits.

Python's json module accepts things our requests never need and that break later steps in
confusing ways: nesting a thousand levels deep (RecursionError), integers of thousands of digits
(slow to convert, and too long to print in an error message), NaN and Infinity. `loads` refuses
each of them with a sentence saying what was wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # settings are two levels deep; presets and fleets a few more
MAX_NUMBER_CHARS = 40


class JsonError(ValueError):
    """Input that is not acceptable JSON; str() says why in one sentence."""


def _number(text: str, convert) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonError(f"a number with {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = convert(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise JsonError(f"number {text} is out of range")
    return value


def _constant(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON number")


def depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:  # deeper than the limit is enough to know
            todo.extend((child, level + 1) for child in children)
    return deepest


def loads(data: bytes | str) -> Any:
    """Parse JSON text, or raise JsonError naming the problem."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, parse_int=lambda s: _number(s, int),
                           parse_float=lambda s: _number(s, float), parse_constant=_constant)
    except UnicodeDecodeError:
        raise JsonError("not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise JsonError(f"nested more than {MAX_DEPTH} levels deep") from None
    except JsonError:
        raise
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise JsonError(f"not valid JSON ({exc})") from None
    if depth(value) > MAX_DEPTH:
        raise JsonError(f"nested more than {MAX_DEPTH} levels deep")
    return value
