"""One sending account, many threads: every transaction gets its own nonce, none is skipped, and
accounts do not wait for one another's sends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from eth_account import Account

from market.chain import Chain

ETHER = 10**18


def _sent_nonces(chain: Chain, receipts: list) -> list[int]:
    return sorted(chain.web3.eth.get_transaction(r.tx_hash)["nonce"] for r in receipts)


def test_concurrent_senders_on_one_account_never_reuse_a_nonce(chain: Chain) -> None:
    sender, other = Account.create(), Account.create()
    chain.fund(sender.address, ETHER)
    chain.fund(other.address, ETHER)
    first = chain.web3.eth.get_transaction_count(sender.address)

    def send(i: int) -> object:
        # Two accounts interleaved: the other's sends must not disturb the sender's sequence.
        account = other if i % 5 == 4 else sender
        return chain.send_ether(account, Account.create().address, 1 + i)

    with ThreadPoolExecutor(max_workers=6) as pool:
        receipts = list(pool.map(send, range(30)))

    mine = [r for i, r in enumerate(receipts) if i % 5 != 4]
    theirs = [r for i, r in enumerate(receipts) if i % 5 == 4]
    assert _sent_nonces(chain, mine) == list(range(first, first + len(mine)))
    assert _sent_nonces(chain, theirs) == list(range(len(theirs)))
    assert chain.web3.eth.get_transaction_count(sender.address) == first + len(mine)


def test_a_send_from_elsewhere_is_not_given_its_nonce_again(chain: Chain) -> None:
    """Another `Chain` on the same node (another process, a wallet) sends from the account: the
    first object's next nonce follows the chain's count, not its own memory."""
    sender = Account.create()
    chain.fund(sender.address, ETHER)
    chain.send_ether(sender, Account.create().address, 1)
    elsewhere = Chain(chain.backend)
    elsewhere.send_ether(sender, Account.create().address, 2)
    receipt = chain.send_ether(sender, Account.create().address, 3)
    assert chain.web3.eth.get_transaction(receipt.tx_hash)["nonce"] == 2
