"""`market bench gas`: gas used by stake, post, draw, accept, finalize, claim and fee claims as the
number of participants grows.

For each size N (10, 100, 1,000 by default), on one freshly deployed market with three
registered heavy nodes:

- `stake`: staking one more dataset once N datasets are staked: the N-th `stakeDataset`, by a
  provider that approved the stake in a transaction of its own before (`approve`, its gas);
- `stake_permit`: the same in one transaction, `stakeDatasetWithPermit`, by a provider that never
  signed a permit before (its first permit nonce costs it a new storage slot, so this is the
  dearest case; what `StakingClient.stake_dataset` and `Sandbox.datasets` send);
- `post`: `postJobWithPermit` (approval and escrow in one transaction) of a job that asks for N
  participants, with a committee of three and a quorum of two;
- `draw`: `drawCommittee` of that job (three members drawn from the registry; it depends on the
  committee's size, bounded by the draw's 64 tries, not on N);
- `accept`: one member's `acceptJob` (the most expensive of the three);
- `finalize`: settling that job with N payees under one Merkle root, two of the three accepted
  members signing;
- `claim_fee`: the third accepted member taking its fee share with `claimFee`;
- `claim`: the most expensive of a sample of claims from that tree (first, last and spread
  leaves), each by a payee that already holds tokens, as a provider who bought its stake does;
- `claim_new_holder`: the same for payees that never held the token. The ERC-20 balance slot
  they get costs 17,100 gas more (a zero-to-nonzero store), whoever pays them.

One warm-up job runs first, so that the figures are the steady state of a market in use rather
than the one-time cost of its first job (creating the committee's fee balances and the global
counters). Gas is read from the receipts of real transactions, so the figures are the same on
every backend that runs the same EVM version.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from eth_account import Account

from market.chain import TOKEN, Chain
from market.sandbox import Sandbox

GasResult = dict[str, dict[str, int]]

OPERATIONS = (
    "approve", "stake", "stake_permit", "post", "draw", "accept", "finalize", "claim_fee", "claim",
    "claim_new_holder",
)  # fmt: skip
FINALIZE_FLATNESS = 0.05
"""Finalize for the largest size may cost at most this much more than for the smallest."""
CLAIM_LIMIT = 90_000


def run_gas_bench(
    chain: Chain, sizes: Sequence[int] = (10, 100, 1000), claims: int = 8
) -> GasResult:
    """Measure every operation at every size on `chain`; see the module docstring."""
    market = Sandbox.deploy(chain)
    committee = market.heavy_nodes(3)
    buyer = market.account(len(sizes) * 1_000 * TOKEN)
    stake = market.config.min_dataset_stake
    provider = market.account((max(sizes) + 1) * stake)  # never emptied: no refund
    result: GasResult = {op: {} for op in OPERATIONS}
    staked = 0
    for size, measured in [(1, False)] + [(s, True) for s in sorted(sizes)]:  # warm-up first
        gas: dict[str, int] = {}
        while staked < size - 1:
            market.staking.stake_dataset(provider, secrets.token_bytes(32), stake, "ipfs://bench")
            staked += 1
        # The N-th dataset both ways, each by a new provider that holds its stake.
        approver, permitter = market.account(stake), market.account(stake)
        gas["approve"] = market.token.approve(approver, market.market, stake).gas_used
        receipt = market.staking.stake_dataset(  # the allowance covers it: plain stakeDataset
            approver, secrets.token_bytes(32), stake, "ipfs://bench"
        )
        gas["stake"] = receipt.gas_used
        receipt = market.staking.stake_dataset(  # no allowance: stakeDatasetWithPermit
            permitter, secrets.token_bytes(32), stake, "ipfs://bench"
        )
        gas["stake_permit"] = receipt.gas_used
        staked += 2

        params = market.params(committee, budget=1_000 * TOKEN, min_participants=size)
        receipt = market.escrow.submit_job(buyer, params)
        gas["post"] = receipt.gas_used
        job_id = market.escrow.posted_job_id(receipt)
        gas["draw"] = market.escrow.draw_committee(market.deployer, job_id).gas_used
        assert set(market.escrow.job(job_id).committee) == {n.address for n in committee}
        gas["accept"] = max(market.escrow.accept_job(n, job_id).gas_used for n in committee)

        payees = {Account.create().address: 1 + i for i in range(size)}
        settled, tree = market.result(job_id, payees, participants=size)
        assert tree is not None
        signatures = market.sign(committee[:2], settled)
        gas["finalize"] = market.escrow.finalize(committee[0], settled, signatures).gas_used
        late = market.sign(committee[2:], settled)[0]  # left out of finalize, claims its share
        gas["claim_fee"] = market.escrow.claim_fee(committee[2], job_id, late).gas_used

        if not measured:
            continue  # the warm-up job's payouts stay unclaimed, as some always are
        entries = list(tree.entries())
        picks = sorted({round(i * (len(entries) - 1) / max(1, claims - 1)) for i in range(claims)})
        for index in picks:
            account, amount = entries[index]
            holder = index % 2 == 0
            if holder:
                market.token.transfer(market.deployer, account, 1)
            receipt = market.escrow.claim(
                market.deployer, job_id, account, amount, tree.proof(account)
            )
            key = "claim" if holder else "claim_new_holder"
            gas[key] = max(gas.get(key, 0), receipt.gas_used)
        for op in OPERATIONS:
            result[op][str(size)] = gas[op]
    return result


def check_gas(result: GasResult) -> list[str]:
    """The targets the figures must meet, each as a line saying whether it holds."""
    finalize = result["finalize"]
    sizes = sorted(finalize, key=int)
    small, large = finalize[sizes[0]], finalize[sizes[-1]]
    growth = large / small - 1
    worst_claim = max(result["claim"].values())
    new_holder = max(result["claim_new_holder"].values())
    permit = max(result["stake_permit"].values())
    two = max(
        a + s for a, s in zip(result["approve"].values(), result["stake"].values(), strict=True)
    )
    return [
        f"finalize {sizes[-1]} vs {sizes[0]} participants: {growth:+.2%} "
        f"({'ok' if abs(growth) <= FINALIZE_FLATNESS else 'FAILS'}: within "
        f"{FINALIZE_FLATNESS:.0%})",
        f"most expensive claim: {worst_claim:,} gas "
        f"({'ok' if worst_claim < CLAIM_LIMIT else 'FAILS'}: under {CLAIM_LIMIT:,}); "
        f"to a first-time holder: {new_holder:,}",
        f"stake in one transaction: stakeDatasetWithPermit {permit:,} gas, against approve + "
        f"stakeDataset {two:,} in two ({permit / two - 1:+.0%})",
        f"committee of three: draw {max(result['draw'].values()):,} gas, accept "
        f"{max(result['accept'].values()):,} per member, claimFee "
        f"{max(result['claim_fee'].values()):,} per member left out of finalize",
    ]


def format_gas_table(result: GasResult) -> str:
    sizes = sorted(next(iter(result.values())), key=int)
    header = f"{'operation':<18}" + "".join(f"{int(s):>12,}" for s in sizes)
    lines = [header + "   participants", "-" * (len(header) + 15)]
    for op, by_size in result.items():
        lines.append(f"{op:<18}" + "".join(f"{by_size[s]:>12,}" for s in sizes))
    return "\n".join(lines)
