"""The one check of a US state code, for the building layer, the commands and the importer."""

from __future__ import annotations

from typing import Any

from analysis_lib.checks import check_type, fail_value

#: What a state argument must be, in every message that refuses one.
EXPECTED = "a two-letter state code such as 'MA'"


def clean_state(name: str, value: Any) -> str:
    """Return ``value`` as an upper-case two-letter state code.

    Raises ``TypeError`` unless ``value`` is a str and ``ValueError`` unless it is two ASCII
    letters (surrounding spaces and case are forgiven), naming the argument ``name`` (for
    example ``"state"`` for a function, ``"--state"`` for a command).
    """
    check_type(name, value, str, EXPECTED)
    state = value.strip().upper()
    if len(state) != 2 or not (state.isascii() and state.isalpha()):
        raise fail_value(name, EXPECTED, value)
    return state
