"""Block pages: a probe of a service's endpoint whose answer carries one of these marks has
met the censor, not the service (probe.py)."""

from __future__ import annotations

from transports import DialError, Failure, Op

__all__ = ["BLOCK_PAGE_MARKS", "block_page", "is_block_page"]

# Marks of block pages seen in the wild (and the lab's own), matched in a response's first
# bytes.
BLOCK_PAGE_MARKS = (
    b"Access to this resource is restricted",  # the lab's
    b"eais.rkn.gov.ru",
    "Доступ к информационному ресурсу ограничен".encode(),
    "доступ ограничен".encode(),
)


def is_block_page(data: bytes) -> bool:
    return any(mark in data for mark in BLOCK_PAGE_MARKS)


def block_page() -> DialError:
    return DialError(Failure.HTTP_BLOCKPAGE, Op.HTTP_ROUND_TRIP, "the answer is a block page")
