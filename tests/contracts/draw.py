"""A Python mirror of `Marketplace._draw`, so tests can say which committee a seed gives before
the contract draws it (and what an attacker who knows the seed could compute)."""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode
from eth_utils import keccak

MAX_DRAW_TRIES = 64


def seed_of(block_hash: bytes, job_id: int) -> bytes:
    """The draw's seed: `keccak256(abi.encode(blockhash(drawBlock), jobId))`."""
    return keccak(encode(["bytes32", "uint256"], [block_hash, job_id]))


def draw(
    seed: bytes, pool: Sequence[str], size: int, buyer: str, eligible: Sequence[bool] | None = None
) -> tuple[str, ...] | None:
    """The committee a partial Fisher-Yates shuffle of `pool`'s positions gives: the first `size`
    eligible members other than `buyer`, ascending; None when there are not enough."""
    n = len(pool)
    swapped: dict[int, int] = {}  # position -> the pool index it holds after the swaps so far
    picked: list[str] = []
    for i in range(min(n, MAX_DRAW_TRIES)):
        if len(picked) == size:
            break
        j = i + int.from_bytes(keccak(encode(["bytes32", "uint256"], [seed, i])), "big") % (n - i)
        at = swapped.get(j, j)
        swapped[j] = swapped.get(i, i)
        if pool[at] == buyer or (eligible is not None and not eligible[at]):
            continue
        picked.append(pool[at])
    if len(picked) < size:
        return None
    return tuple(sorted(picked, key=lambda a: int(a, 16)))


def block_hash(world, block: int) -> bytes:
    return bytes(world.chain.web3.eth.get_block(block)["hash"])


def expected_committee(world, job_id: int, pool: Sequence[str]) -> tuple[str, ...] | None:
    """The committee the contract will draw for `job_id` over `pool` (the registry as it stood
    when the job was posted)."""
    job = world.escrow.job(job_id)
    seed = seed_of(block_hash(world, job.draw_block), job_id)
    return draw(seed, pool, job.committee_size, job.buyer)
