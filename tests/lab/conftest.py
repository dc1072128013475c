"""A lab for the tests in this directory: one per module, switched between scenarios."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest_asyncio

from helper.lab.lab import Lab
from tests.support import plainclient


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    async with Lab("baseline") as running:
        yield running


async def plain_check(lab: Lab, target: str, **kwargs) -> plainclient.Outcome:
    return await plainclient.check(
        target,
        dns_server=lab.dns_address,
        cafile=lab.ca.ca_path,
        public=ipaddress.IPv4Network(lab.table.network),
        **kwargs,
    )
