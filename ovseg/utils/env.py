"""Reading ovseg's environment switches: one parser, and a bad value is an error naming it.

``OVSEG_OFFLINE``, ``OVSEG_REUSE_HOST_MEMORY``, ``OVSEG_ONEDNN_LINEAR`` and ``OVSEG_DEBUG`` are
switches: 1/0, true/false, yes/no, on/off (any case, surrounding spaces ignored); unset or empty
means the default. Anything else (``OVSEG_OFFLINE=ture``) raises instead of silently reading as
the default, which would, say, let an "offline" job download.
"""

from __future__ import annotations

import os

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class EnvError(ValueError):
    """An environment variable holds a value its reader cannot take (the message names both)."""


def env_flag(name: str, default: bool) -> bool:
    """The switch ``$name``, read now; ``default`` when unset or empty.

    Raises:
        EnvError: naming the variable and its value, when it is not one of the words above.
    """
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise EnvError(
        f"environment variable {name}={os.environ[name]!r} is not a switch: use one of "
        f"{', '.join(TRUE)} (on) or {', '.join(FALSE)} (off)"
    )


def env_int(name: str, default: int) -> int:
    """The integer ``$name``, read now; ``default`` when unset or empty.

    Raises:
        EnvError: naming the variable and its value, when it is not an integer.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise EnvError(f"environment variable {name}={value!r} is not an integer") from None
