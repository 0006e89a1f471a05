"""Client of the `DataToken` ERC-20 (budgets, stakes and fees), with EIP-2612 permits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from market.chain.client import Chain, Receipt

PERMIT_TYPEHASH = keccak(
    text="Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
)
DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
PERMIT_TTL = 3_600
"""Seconds a permit signed by `TokenClient.permit` stays valid."""


@dataclass(frozen=True)
class Permit:
    """An EIP-2612 signature letting `spender` move `value` of the owner's tokens."""

    value: int
    deadline: int
    v: int
    r: bytes
    s: bytes


class TokenClient:
    """Typed access to the DataToken at `address`."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract("DataToken", address)
        self.address = self.contract.address
        self._domain: bytes | None = None  # the EIP-712 domain separator of its permits

    def balance_of(self, account: str) -> int:
        return int(self.chain.call(self.contract.functions.balanceOf(to_checksum_address(account))))

    def allowance(self, owner: str, spender: str) -> int:
        fn = self.contract.functions.allowance(
            to_checksum_address(owner), to_checksum_address(spender)
        )
        return int(self.chain.call(fn))

    def total_supply(self) -> int:
        return int(self.chain.call(self.contract.functions.totalSupply()))

    def transfer(self, sender: LocalAccount, to: str, amount: int) -> Receipt:
        return self.chain.transact(
            sender, self.contract.functions.transfer(to_checksum_address(to), amount)
        )

    def approve(self, owner: LocalAccount, spender: str, amount: int) -> Receipt:
        fn = self.contract.functions.approve(to_checksum_address(spender), amount)
        return self.chain.transact(owner, fn)

    def ensure_allowance(self, owner: LocalAccount, spender: str, amount: int) -> Receipt | None:
        """Approves `amount` unless the allowance already covers it."""
        if self.allowance(owner.address, spender) >= amount:
            return None
        return self.approve(owner, spender, amount)

    def faucet(self, sender: LocalAccount, to: str, amount: int) -> Receipt:
        """Mints `amount` to `to` (devnet deployments only)."""
        return self.chain.transact(
            sender, self.contract.functions.faucet(to_checksum_address(to), amount)
        )

    def faucet_many(self, sender: LocalAccount, to: Sequence[str], amount_each: int) -> Receipt:
        """Mints `amount_each` to every address of `to` in one transaction (devnet deployments
        only; `len(to) * amount_each` at most `FAUCET_LIMIT`)."""
        fn = self.contract.functions.faucetMany([to_checksum_address(a) for a in to], amount_each)
        return self.chain.transact(sender, fn)

    def faucet_limit(self) -> int:
        """`FAUCET_LIMIT`: the most one faucet call mints in all."""
        return int(self.chain.call(self.contract.functions.FAUCET_LIMIT()))

    def burn(self, owner: LocalAccount, amount: int) -> Receipt:
        return self.chain.transact(owner, self.contract.functions.burn(amount))

    def nonces(self, owner: str) -> int:
        return int(self.chain.call(self.contract.functions.nonces(to_checksum_address(owner))))

    def permit(
        self, owner: LocalAccount, spender: str, value: int, nonce: int | None = None
    ) -> Permit:
        """`owner`'s permit for `spender` to move `value`, valid for `PERMIT_TTL` seconds of chain
        time: what the marketplace's `...WithPermit` functions take."""
        return self.sign_permit(owner, spender, value, self.chain.clock() + PERMIT_TTL, nonce)

    def sign_permit(
        self,
        owner: LocalAccount,
        spender: str,
        value: int,
        deadline: int,
        nonce: int | None = None,
    ) -> Permit:
        """Signs an EIP-2612 permit for the token's own domain. `nonce` defaults to the owner's
        current permit nonce (read from the chain; pass 0 for an account that never signed
        one)."""
        if self._domain is None:  # fixed at deployment: read the name once
            name = self.chain.call(self.contract.functions.name())
            self._domain = keccak(
                encode(
                    ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                    [
                        DOMAIN_TYPEHASH,
                        keccak(text=name),
                        keccak(text="1"),
                        self.chain.chain_id,
                        self.address,
                    ],
                )
            )
        domain = self._domain
        struct = keccak(
            encode(
                ["bytes32", "address", "address", "uint256", "uint256", "uint256"],
                [
                    PERMIT_TYPEHASH,
                    owner.address,
                    to_checksum_address(spender),
                    value,
                    self.nonces(owner.address) if nonce is None else nonce,
                    deadline,
                ],
            )  # fmt: skip
        )
        signed = owner.unsafe_sign_hash(keccak(b"\x19\x01" + domain + struct))
        return Permit(
            value, deadline, signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
        )
