"""The pushpool-owned lines of a work pool's description (what Prefect's UI shows on the pool's page).

pushpool writes messages to users into pool descriptions: why a managed pool is not served (``usecases/managed.py``),
and the static outbound IP addresses managed runs leave from (ECS with ``--static-ips``). Every line pushpool owns
starts with ``[pushpool] ``; every other line is the user's and is kept as written, above pushpool's lines. The
addresses are recorded on the operator's template pool when it is provisioned (``usecases/provision_infra.py``) and
copied from there onto the managed pools by the monitor (no cloud read on a tick).

Example:
    >>> text = with_lines("Team A's flows", [addresses_line(["203.0.113.7"])])
    >>> text.splitlines()[0], addresses_in(text)
    ("Team A's flows", ['203.0.113.7'])
    >>> with_lines(text, [])
    "Team A's flows"
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

NOTE = "[pushpool] "  # the start of every line of a description that pushpool owns
ADDRESSES = NOTE + "static outbound IP addresses of managed runs (allow these in your firewalls): "


def user_text(description: str | None) -> str:
    """The user's part of ``description``: every line that is not pushpool's."""
    return "\n".join(line for line in (description or "").splitlines() if not line.startswith(NOTE)).strip()


def with_lines(description: str | None, lines: Sequence[str]) -> str:
    """``description`` with pushpool's lines replaced by ``lines`` (the user's text kept, first; a description with no
    pushpool line, given none, is returned as it is)."""
    if not lines and not any(line.startswith(NOTE) for line in (description or "").splitlines()):
        return description or ""
    user = user_text(description)
    ours = "\n".join(lines)
    return f"{user}\n\n{ours}" if user and ours else user or ours


def addresses_line(addresses: Sequence[str]) -> str:
    return ADDRESSES + ", ".join(addresses)


def addresses_in(description: str | None) -> list[str]:
    """The addresses of pushpool's addresses line in ``description`` (only valid IP addresses; none: empty)."""
    for line in (description or "").splitlines():
        if line.startswith(ADDRESSES):
            found = [a.strip() for a in line.removeprefix(ADDRESSES).split(",")]
            return [a for a in found if _is_address(a)]
    return []


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
