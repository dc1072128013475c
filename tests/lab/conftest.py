"""The lab for the tests in this directory: one per module and mode, switched between
scenarios. Every test that takes `lab` runs twice: against the userland lab (loopback
addresses, censor in this process) and against the kernel-level lab (a network namespace
behind nftables, reached over a veth pair), which needs root."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from helper.lab.lab import Lab
from helper.lab.netns import NetnsLab
from tests.support import plainclient
from tests.support.networks import free_network
from tests.support.peers import require_peer, skip_or_fail


def require_netns() -> None:
    require_peer("ip", "iproute2")
    require_peer("nft", "nftables")
    if os.geteuid() != 0:
        skip_or_fail("the kernel-level lab needs root (network namespaces, nftables)")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["userland", "netns"])
async def lab(request: pytest.FixtureRequest) -> AsyncIterator[Lab | NetnsLab]:
    if request.param == "netns":
        require_netns()
        async with NetnsLab("baseline", network=free_network(kernel=True)) as kernel:
            yield kernel
    else:
        async with Lab("baseline", network=free_network(kernel=False)) as userland:
            yield userland


async def plain_check(lab: Lab | NetnsLab, target: str, **kwargs) -> plainclient.Outcome:
    return await plainclient.check(
        target,
        dns_server=lab.dns_address,
        cafile=lab.ca.ca_path,
        public=ipaddress.IPv4Network(lab.table.network),
        **kwargs,
    )
