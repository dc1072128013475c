"""`[telegram]`: Telegram's DC address table, overridable (transports/mtproto/dcs.py holds
the built-in one). `tgws` routes use it to know which DC an address belongs to, and the
MTProto proxy endpoint to find the address of the DC a client asks for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from transports.mtproto.dcs import DEFAULT_DCS, DataCentre, DcTable, canonical_address

from .schema import Problems, setting

_FLAGS = ("media", "test")
_FORM = 'an address and its DC, like { "149.154.167.51" = "2", "149.154.167.151" = "2 media" }'


def parse_dc(text: Any) -> DataCentre:
    """`"2"`, `"2 media"`, `"2 test"`, `"2 test media"`: a DC as the table keys it."""
    if not isinstance(text, str | int) or isinstance(text, bool):
        raise ValueError(f'{text!r}: write the DC as "N", "N media", "N test" or "N test media"')
    words = str(text).split()
    if not words or not (words[0].isascii() and words[0].isdigit()):
        raise ValueError(f'{text!r}: the DC\'s number first ("2", "2 media")')
    number = int(words[0])
    if not 0 < number < 10000:
        raise ValueError(f"{text!r}: a DC number is 1-9999")
    flags = words[1:]
    unknown = [w for w in flags if w not in _FLAGS]
    if unknown:
        raise ValueError(f"{text!r}: {unknown[0]!r} is no DC kind (media, test)")
    if len(set(flags)) != len(flags):
        raise ValueError(f"{text!r}: a kind given twice")
    return DataCentre(number, media="media" in flags, test="test" in flags)


def _read_dcs(path: str, data: Any, problems: Problems, base: Path | None) -> dict[str, DataCentre]:
    if not isinstance(data, dict):
        problems.add(path, f"expected {_FORM}")
        return {}
    found: dict[str, DataCentre] = {}
    for address, value in data.items():
        where = f'{path}."{address}"'
        key = canonical_address(address) if isinstance(address, str) else None
        if key is None:
            problems.add(where, f"{address!r} is not an IP address (a DC is reached by address)")
            continue
        try:
            found[key] = parse_dc(value)
        except ValueError as exc:
            problems.add(where, str(exc))
    return found


@dataclass(frozen=True)
class TelegramConfig:
    dcs: Mapping[str, DataCentre] = setting(
        {},
        read=_read_dcs,
        doc="DC addresses, added to the built-in table or replacing what it says about them: "
        '`{ "149.154.167.51" = "2", "2001:67c:4e8:f002::a" = "2", "149.154.167.151" = '
        '"2 media", "149.154.167.40" = "2 test" }` (IPv4 or IPv6; the DC\'s number, then '
        "`media` for a media-only address, `test` for the test environment). `tgws` routes "
        "take a connection to one of these addresses to that DC's web endpoint; the MTProto "
        "proxy endpoint dials the first address of the DC a client asks for "
        "(`mtproto_proxy.dcs` still comes first there). docs/telegram.md lists the built-in "
        "table.",
        shown="the built-in table",
    )

    def dc_table(self) -> DcTable:
        """The built-in table with these addresses, which come first (a DC's first address
        is the one the MTProto proxy endpoint dials)."""
        if not self.dcs:
            return DEFAULT_DCS
        rest = {
            a: dc for a, dc in DEFAULT_DCS.addresses.items() if canonical_address(a) not in self.dcs
        }
        return replace(DEFAULT_DCS, addresses={**self.dcs, **rest})
