"""How much the CLI says on stderr: -v and -q, given before or after the verb.

The root callback sets both for each command; a verb's own -v adds to the count
(`began -v sample -v` is -vv) and its -q hushes. Plain state, no imports: app.py
reads it on its cheapest paths too.
"""

from __future__ import annotations

_state = {"verbose": 0, "quiet": False}


def reset(verbose: int = 0, quiet: bool = False) -> None:
    _state["verbose"], _state["quiet"] = verbose, quiet


def louder(count: int) -> None:
    _state["verbose"] += count


def hush() -> None:
    _state["quiet"] = True


def verbose() -> int:
    return _state["verbose"]


def quiet() -> bool:
    return _state["quiet"]
