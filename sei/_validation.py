"""Alias of :mod:`sei.validation`, the public validation module, for code that still
imports the old private name; it goes once nothing imports it."""

from .validation import *  # noqa: F401,F403
from .validation import _check_int, _is_low_float, _is_tensor  # noqa: F401
