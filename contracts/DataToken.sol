// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title DataToken
/// @notice The ERC-20 used for budgets, stakes and fees. Supports EIP-2612 `permit` so a buyer can
/// approve and escrow in one transaction, and burning so slashed stakes can leave the supply.
/// On devnets (`faucetEnabled`), anyone can mint a bounded amount per call, to one account
/// (`faucet`) or to many at once (`faucetMany`, which funds a devnet's providers in batches).
contract DataToken is ERC20, ERC20Burnable, ERC20Permit {
    // ------------------------------------------------------------------ errors
    /// @dev The faucet is switched off on this deployment (a public network).
    error DataTokenFaucetDisabled();
    /// @dev A faucet request above the per-call limit: `requested` is what the call would mint in
    /// all (for `faucetMany`, `amountEach` alone when that is already above the limit).
    error DataTokenFaucetAboveLimit(uint256 requested, uint256 limit);

    // ------------------------------------------------------------------ storage
    /// @notice The most one faucet call (`faucet` or `faucetMany`, in all) can mint.
    uint256 public constant FAUCET_LIMIT = 1_000_000 ether;
    /// @notice Whether `faucet` and `faucetMany` mint (devnets) or revert (public networks).
    bool public immutable faucetEnabled;

    // ------------------------------------------------------------------ constructor
    /// @param initialHolder Receives `initialSupply`.
    /// @param initialSupply Minted once at deployment.
    /// @param faucetEnabled_ True only on devnets.
    constructor(address initialHolder, uint256 initialSupply, bool faucetEnabled_)
        ERC20("Data Token", "DATA")
        ERC20Permit("Data Token")
    {
        faucetEnabled = faucetEnabled_;
        if (initialSupply > 0) _mint(initialHolder, initialSupply);
    }

    // ------------------------------------------------------------------ external
    /// @notice Mints `amount` to `to` on a devnet deployment.
    /// @param to The receiver.
    /// @param amount At most `FAUCET_LIMIT`.
    function faucet(address to, uint256 amount) external {
        if (!faucetEnabled) revert DataTokenFaucetDisabled();
        if (amount > FAUCET_LIMIT) revert DataTokenFaucetAboveLimit(amount, FAUCET_LIMIT);
        _mint(to, amount);
    }

    /// @notice Mints `amountEach` to every address of `to` on a devnet deployment: one
    /// transaction funds a batch of accounts. The limit is on the call's total, as for `faucet`.
    /// @param to The receivers (a repeated address receives once per entry; an empty list mints
    /// nothing).
    /// @param amountEach What each entry receives; `amountEach * to.length` at most `FAUCET_LIMIT`.
    function faucetMany(address[] calldata to, uint256 amountEach) external {
        if (!faucetEnabled) revert DataTokenFaucetDisabled();
        if (amountEach > FAUCET_LIMIT) revert DataTokenFaucetAboveLimit(amountEach, FAUCET_LIMIT);
        uint256 total = amountEach * to.length; // no overflow: both factors are far below 2**128
        if (total > FAUCET_LIMIT) revert DataTokenFaucetAboveLimit(total, FAUCET_LIMIT);
        for (uint256 i = 0; i < to.length; ++i) {
            _mint(to[i], amountEach);
        }
    }
}
