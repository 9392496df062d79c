"""The one exception type the evaluators raise for bad input."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Bad evaluation input: the message names the file, image or value at fault and what to do.

    The command line prints it as one line and exits non-zero.
    """
