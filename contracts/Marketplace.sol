// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title Marketplace
/// @notice Escrow, staking, settlement and slashing for private computations over data that never
/// leaves its owners. A buyer escrows a budget for a job served by a committee of staked heavy
/// nodes; a quorum of that committee signs the result (EIP-712 `Result`); the contract pays the
/// committee's fee, opens the providers' payouts for claiming under a Merkle root (OpenZeppelin
/// `StandardMerkleTree` leaves over `(address account, uint256 amount)`), refunds the rest, and
/// slashes stakes: providers within their own signed `Participation` cap, heavy nodes for
/// equivocation and for missed deadlines.
///
/// Settlement is O(1) in the number of participants (O(1) per slash and per committee member);
/// a claim is O(log n). Nothing loops over participants.
///
/// Token accounting (checked by the invariant tests): the contract's token balance always equals
/// `totalEscrowed() + totalStaked() + totalUnclaimed()`.
contract Marketplace is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // =================================================================== types
    /// @notice Job lifecycle: `Posted → Finalized | Aborted | Expired`, each transition at most once.
    enum JobState {
        None,
        Posted,
        Finalized,
        Aborted,
        Expired
    }

    /// @notice Deployment-time parameters; all durations in seconds.
    struct Config {
        /// Longest allowed time between posting a job and its deadline.
        uint64 maxJobWindow;
        /// Time after the deadline during which the committee may still finalize or abort.
        uint64 settlementGrace;
        /// Time after `deadline + settlementGrace` during which equivocation can be reported.
        uint64 reportWindow;
        /// Time between an unstake request and a withdrawal; longer than every slashing window.
        uint64 unbondingPeriod;
        uint128 minHeavyNodeStake;
        uint128 minDatasetStake;
        /// Taken from each committee member's stake (at most its stake) when its job expires.
        uint128 livenessPenalty;
        /// Share of a heavy node's stake slashed for signing two different results for one job.
        uint16 equivocationSlashBps;
        /// Share of an equivocation slash paid to the reporter; the rest is burned.
        uint16 reporterRewardBps;
        /// Time after posting during which drawn committee members accept the job.
        uint64 acceptWindow;
    }

    /// @notice What a buyer posts.
    struct JobParams {
        /// Content address (keccak256 of the canonical proposal JSON).
        bytes32 specHash;
        /// Where the proposal can be fetched (IPFS CID URI or other).
        string specURI;
        uint256 budget;
        /// Share of the budget paid to the signing committee members.
        uint16 feeBps;
        /// Unix time after which providers can no longer submit.
        uint64 deadline;
        uint32 minParticipants;
        /// Members the contract draws from the active heavy-node registry (nobody picks them).
        uint8 committeeSize;
        /// Signatures needed to finalize or abort; a strict majority of the committee.
        uint8 quorum;
        /// Upper bound on any provider slash in this job, in basis points of its stake.
        uint16 maxSlashBps;
    }

    /// @notice One provider slash inside a `Result`.
    struct Slash {
        bytes32 datasetId;
        uint256 amount;
    }

    /// @notice The committee's signed outcome of a job (EIP-712 typed data).
    struct Result {
        uint256 jobId;
        bytes32 resultHash;
        string resultURI;
        /// Root of the payout tree (OpenZeppelin StandardMerkleTree, leaves `(address,uint256)`).
        bytes32 payoutRoot;
        /// Payouts funded from the budget; the buyer's refund is `budget - fee - payoutTotal`.
        uint256 payoutTotal;
        /// Slashed tokens added to the payout tree (to positive contributors); the rest is burned.
        uint256 slashedToPayouts;
        uint32 participants;
        /// Sorted by strictly ascending `datasetId`.
        Slash[] slashes;
    }

    /// @notice A provider's consent to a slash: its own cap and its EIP-712 `Participation` signature.
    struct SlashConsent {
        uint16 maxSlashBps;
        bytes signature;
    }

    /// @dev Slot 0 holds everything `claim` and the state checks read, slot 1 the money, slot 2
    /// the committee's draw and acceptance (masks: bit i is `committee[i]`, ≤ MAX_COMMITTEE bits).
    struct Job {
        address buyer; // 20 bytes
        uint64 deadline; // 8: unix seconds, fits until year 5e11
        uint16 feeBps; // 2: ≤ 10_000
        uint8 quorum; // 1: committee ≤ MAX_COMMITTEE
        JobState state; // 1
        uint128 budget; // checked ≤ type(uint128).max at post
        uint128 unclaimed; // ≤ budget + slashes, both < 2^128 tokens in any real supply
        uint64 postedAt; // 8
        uint32 minParticipants; // 4
        uint16 maxSlashBps; // 2
        uint8 committeeSize; // 1
        uint16 acceptedMask; // 2
        uint16 feePaidMask; // 2: accepted members paid their fee share
        uint64 drawBlock; // 8: the block whose hash seeds the draw
        uint64 acceptBy; // 8: last second a drawn member may accept
        uint128 feeHeld; // ≤ budget: fee shares of accepted members that have not claimed yet
        uint32 poolSize; // 4: draw-pool entries when the draw block was fixed (the draw's range)
        bytes32 specHash;
        bytes32 payoutRoot;
        bytes32 resultHash;
        /// The digest the committee finalized with; later signers over it claim their fee.
        bytes32 settledDigest;
        address[] committee;
    }

    /// @notice A job as returned by `getJob`.
    struct JobView {
        JobState state;
        address buyer;
        bytes32 specHash;
        uint256 budget;
        uint16 feeBps;
        uint64 postedAt;
        uint64 deadline;
        uint32 minParticipants;
        uint8 quorum;
        uint16 maxSlashBps;
        /// The drawn committee in ascending order (empty until drawn).
        address[] committee;
        bytes32 resultHash;
        bytes32 payoutRoot;
        uint256 unclaimed;
        uint8 committeeSize;
        uint16 acceptedMask;
        uint64 drawBlock;
        uint64 acceptBy;
        uint256 feeHeld;
    }

    struct HeavyNode {
        uint128 stake;
        uint64 unstakeRequestedAt; // 0 while active
        bool registered;
        uint128 feesEarned;
        bytes32 encryptionKey; // X25519 public key that light nodes seal shares to
        string endpoint;
    }

    struct Dataset {
        address owner;
        uint64 unstakeRequestedAt; // 0 while active
        uint128 stake;
        string metadataURI;
    }

    /// @dev A heavy node's place in the draw pool, one per node ever active (kept when it leaves,
    /// reused when it comes back), packed in one slot. A job draws from the entries that existed
    /// when its draw block was fixed and were in the pool at the end of that block, so nothing
    /// done once the seed is known (registering, unstaking, topping up, being penalized) moves
    /// its draw.
    struct PoolEntry {
        address node; // 20
        uint48 joinedAt; // 6: block in which the node (last) became active
        uint48 leftAt; // 6: block in which it stopped being active; 0 while it is active
    }

    // =================================================================== errors
    error MarketplaceZeroAmount();
    error MarketplaceAmountTooLarge(uint256 amount, uint256 max);
    error MarketplaceInvalidConfig();
    error MarketplaceJobNotFound(uint256 jobId);
    error MarketplaceJobNotPosted(uint256 jobId, JobState state);
    error MarketplaceJobNotFinalized(uint256 jobId, JobState state);
    error MarketplaceSettlementClosed(uint256 jobId, uint256 closedAt);
    error MarketplaceJobNotExpired(uint256 jobId, uint256 expiresAt);
    error MarketplaceFeeTooHigh(uint16 feeBps, uint16 maxFeeBps);
    error MarketplaceSlashBpsTooHigh(uint16 maxSlashBps);
    error MarketplaceDeadlineOutOfRange(uint64 deadline, uint256 earliest, uint256 latest);
    error MarketplaceInvalidMinParticipants();
    error MarketplaceInvalidCommitteeSize(uint256 size, uint256 max);
    error MarketplaceInvalidQuorum(uint8 quorum, uint256 committeeSize);
    error MarketplaceCommitteeTooSmallToSlash(uint256 committeeSize, uint256 minimum);
    error MarketplaceNotEnoughHeavyNodes(uint256 available, uint256 needed);
    error MarketplaceCommitteeAlreadyDrawn(uint256 jobId);
    error MarketplaceDrawTooEarly(uint256 jobId, uint256 fromBlock);
    error MarketplaceAcceptWindowClosed(uint256 jobId, uint256 closedAt);
    error MarketplaceAlreadyAccepted(uint256 jobId, address node);
    error MarketplaceSignerNotAccepted(uint256 jobId, address signer);
    error MarketplaceFeeAlreadyPaid(uint256 jobId, address node);
    error MarketplaceFeeClaimClosed(uint256 jobId, uint256 closedAt);
    error MarketplaceFeeClaimOpen(uint256 jobId, uint256 closesAt);
    error MarketplaceSlashedOwnerInCommittee(bytes32 datasetId, address owner);
    error MarketplaceInvalidSignature(uint256 index);
    error MarketplaceSignerNotInCommittee(uint256 jobId, address signer);
    error MarketplaceSignaturesNotSorted(uint256 jobId, uint256 index);
    error MarketplaceQuorumNotMet(uint256 jobId, uint256 signatures, uint8 quorum);
    error MarketplaceTooFewParticipants(uint256 jobId, uint32 participants, uint32 minParticipants);
    error MarketplacePayoutAboveBudget(uint256 jobId, uint256 payoutTotal, uint256 available);
    error MarketplaceSlashConsentMismatch(uint256 slashes, uint256 consents);
    error MarketplaceSlashesNotSorted(uint256 index);
    error MarketplaceParticipationNotSigned(uint256 jobId, bytes32 datasetId, address signer);
    error MarketplaceSlashedToPayoutsTooHigh(uint256 slashedToPayouts, uint256 slashedTotal);
    error MarketplaceAlreadyClaimed(uint256 jobId, address account);
    error MarketplaceInvalidProof(uint256 jobId, address account, uint256 amount);
    error MarketplacePayoutPoolExhausted(uint256 jobId, uint256 amount, uint256 unclaimed);
    error MarketplaceNotEquivocation(uint256 jobId);
    error MarketplaceReportWindowClosed(uint256 jobId, uint256 closedAt);
    error MarketplaceAlreadyReported(uint256 jobId, address node);
    error MarketplaceHeavyNodeAlreadyRegistered(address node);
    error MarketplaceHeavyNodeNotRegistered(address node);
    error MarketplaceEmptyEndpoint();
    error MarketplaceStakeTooLow(uint256 amount, uint256 minimum);
    error MarketplaceAlreadyUnbonding(uint256 unlockAt);
    error MarketplaceNotUnbonding();
    error MarketplaceStillUnbonding(uint256 unlockAt);
    error MarketplaceDatasetExists(bytes32 datasetId);
    error MarketplaceDatasetNotFound(bytes32 datasetId);
    error MarketplaceNotDatasetOwner(bytes32 datasetId, address owner);
    error MarketplaceDatasetNotActive(bytes32 datasetId);

    // =================================================================== events
    /// @dev The whole `JobParams` as posted, so an indexer needs nothing else.
    event JobPosted(uint256 indexed jobId, address indexed buyer, JobParams params);
    event CommitteeDrawDeferred(uint256 indexed jobId, uint256 drawBlock);
    event CommitteeDrawn(uint256 indexed jobId, address[] committee, uint256 acceptBy);
    event JobAccepted(uint256 indexed jobId, address indexed node);
    event SlashCapped(uint256 indexed jobId, bytes32 indexed datasetId, uint256 signed, uint256 applied);
    event FeesReleased(uint256 indexed jobId, uint256 refund);
    event JobFinalized(
        uint256 indexed jobId,
        bytes32 resultHash,
        string resultURI,
        bytes32 payoutRoot,
        uint256 claimable,
        uint32 participants,
        uint256 fee,
        uint256 refund
    );
    event FeePaid(uint256 indexed jobId, address indexed node, uint256 amount);
    event JobAborted(uint256 indexed jobId, string reason, uint256 refund);
    event JobExpired(uint256 indexed jobId, uint256 refund);
    event PayoutClaimed(uint256 indexed jobId, address indexed account, uint256 amount);
    event DatasetSlashed(uint256 indexed jobId, bytes32 indexed datasetId, uint256 amount);
    event HeavyNodePenalized(uint256 indexed jobId, address indexed node, uint256 amount);
    event EquivocationReported(
        uint256 indexed jobId, address indexed node, address indexed reporter, uint256 slashed, uint256 reward
    );
    event TokensBurned(uint256 amount);
    event HeavyNodeRegistered(address indexed node, uint256 stake, string endpoint, bytes32 encryptionKey);
    event HeavyNodeUpdated(address indexed node, string endpoint, bytes32 encryptionKey);
    event HeavyNodeToppedUp(address indexed node, uint256 amount, uint256 stake);
    event HeavyNodeUnstakeRequested(address indexed node, uint256 unlockAt);
    event HeavyNodeWithdrawn(address indexed node, uint256 amount);
    event DatasetStaked(bytes32 indexed datasetId, address indexed owner, uint256 stake, string metadataURI);
    event DatasetToppedUp(bytes32 indexed datasetId, uint256 amount, uint256 stake);
    event DatasetUnstakeRequested(bytes32 indexed datasetId, uint256 unlockAt);
    event DatasetWithdrawn(bytes32 indexed datasetId, address indexed owner, uint256 amount);

    // =================================================================== constants
    uint256 public constant MAX_COMMITTEE = 16;
    /// Fewest members of a committee that may slash providers: one or two members are no majority
    /// that a single operator cannot be.
    uint256 public constant MIN_SLASHING_COMMITTEE = 3;
    /// Registry positions a draw may look at before it gives up (skipping inactive ones).
    uint256 private constant MAX_DRAW_TRIES = 64;
    uint16 public constant MAX_FEE_BPS = 5_000;
    uint16 private constant BPS = 10_000;

    bytes32 public constant SLASH_TYPEHASH = keccak256("Slash(bytes32 datasetId,uint256 amount)");
    bytes32 public constant RESULT_TYPEHASH = keccak256(
        "Result(uint256 jobId,bytes32 resultHash,string resultURI,bytes32 payoutRoot,uint256 payoutTotal,"
        "uint256 slashedToPayouts,uint32 participants,Slash[] slashes)Slash(bytes32 datasetId,uint256 amount)"
    );
    bytes32 public constant ABORT_TYPEHASH = keccak256("Abort(uint256 jobId,string reason)");
    bytes32 public constant PARTICIPATION_TYPEHASH =
        keccak256("Participation(uint256 jobId,bytes32 datasetId,uint16 maxSlashBps)");

    // =================================================================== storage
    IERC20 private immutable _token;
    uint64 private immutable _maxJobWindow;
    uint64 private immutable _settlementGrace;
    uint64 private immutable _reportWindow;
    uint64 private immutable _unbondingPeriod;
    uint128 private immutable _minHeavyNodeStake;
    uint128 private immutable _minDatasetStake;
    uint128 private immutable _livenessPenalty;
    uint16 private immutable _equivocationSlashBps;
    uint16 private immutable _reporterRewardBps;
    uint64 private immutable _acceptWindow;

    uint256 private _jobCount;
    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => mapping(bytes32 leaf => bool)) private _claimed;
    mapping(uint256 jobId => mapping(address node => bool)) private _equivocationReported;
    mapping(address node => HeavyNode) private _heavyNodes;
    mapping(bytes32 datasetId => Dataset) private _datasets;
    /// Every heavy node that was ever active, in the order it first became so: committees are
    /// drawn from positions of this array, which never move (see `PoolEntry`).
    PoolEntry[] private _pool;
    mapping(address node => uint256 position) private _poolPosition; // index + 1; 0 = never active
    /// Entries of `_pool` active now (`isActiveHeavyNode`).
    uint256 private _activeHeavyNodes;

    uint256 private _totalEscrowed;
    uint256 private _totalStaked;
    uint256 private _totalUnclaimed;
    uint256 private _totalBurned;

    // =================================================================== constructor
    /// @param token_ The DataToken (must support `burn` and, for the `...WithPermit` functions, `permit`).
    /// @param config_ Windows, minimum stakes and penalties; see `Config`.
    constructor(ERC20Burnable token_, Config memory config_) EIP712("DataMarketplace", "1") {
        // Unbonding must outlast every window in which a stake can still be slashed: a job posted
        // just before an unstake request can finalize (slash providers) until
        // postedAt + maxJobWindow + grace and take equivocation reports until + reportWindow.
        if (
            config_.maxJobWindow == 0
                || config_.unbondingPeriod
                    <= uint256(config_.maxJobWindow) + config_.settlementGrace + config_.reportWindow
                || config_.equivocationSlashBps > BPS || config_.reporterRewardBps > BPS
                || config_.minHeavyNodeStake == 0 || config_.minDatasetStake == 0
                || config_.acceptWindow == 0 || config_.acceptWindow > config_.maxJobWindow
        ) revert MarketplaceInvalidConfig();
        _token = IERC20(address(token_));
        _maxJobWindow = config_.maxJobWindow;
        _settlementGrace = config_.settlementGrace;
        _reportWindow = config_.reportWindow;
        _unbondingPeriod = config_.unbondingPeriod;
        _minHeavyNodeStake = config_.minHeavyNodeStake;
        _minDatasetStake = config_.minDatasetStake;
        _livenessPenalty = config_.livenessPenalty;
        _equivocationSlashBps = config_.equivocationSlashBps;
        _reporterRewardBps = config_.reporterRewardBps;
        _acceptWindow = config_.acceptWindow;
    }

    // =================================================================== jobs
    /// @notice Posts a job and escrows its budget (the caller must have approved it). Nobody
    /// names the committee: `drawCommittee` draws it from the registry with the hash of this
    /// transaction's block, which the buyer cannot know when it signs the transaction.
    /// @param p The job; see `JobParams`.
    /// @return jobId The new job's id (ids start at 1).
    function postJob(JobParams calldata p) external nonReentrant returns (uint256 jobId) {
        jobId = _postJob(p);
    }

    /// @notice Like `postJob`, approving the budget with an EIP-2612 permit in the same transaction.
    /// A permit that fails (already used by a front-runner, expired, badly signed) is ignored as
    /// long as the allowance covers the budget; otherwise its own error is raised (see `_permit`).
    function postJobWithPermit(JobParams calldata p, uint256 permitDeadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
        returns (uint256 jobId)
    {
        _permit(p.budget, permitDeadline, v, r, s);
        jobId = _postJob(p);
    }

    /// @notice Draws a posted job's committee: `committeeSize` distinct heavy nodes other than the
    /// buyer, uniformly from those active at the end of the job's draw block, seeded by that
    /// block's hash. Registry changes made after that block (when the seed is known) do not move
    /// the draw. Anyone may call it from the block after the draw block on; if that hash is no
    /// longer available (256 blocks later) the draw moves to the current block and must be
    /// called again.
    function drawCommittee(uint256 jobId) external {
        Job storage job = _job(jobId);
        if (job.state != JobState.Posted) revert MarketplaceJobNotPosted(jobId, job.state);
        if (job.committee.length != 0) revert MarketplaceCommitteeAlreadyDrawn(jobId);
        if (block.timestamp > job.acceptBy) revert MarketplaceAcceptWindowClosed(jobId, job.acceptBy);
        if (block.number <= job.drawBlock) revert MarketplaceDrawTooEarly(jobId, uint256(job.drawBlock) + 1);
        bytes32 seed = blockhash(job.drawBlock);
        if (seed == bytes32(0)) {
            job.drawBlock = uint64(block.number);
            job.poolSize = uint32(_pool.length);
            emit CommitteeDrawDeferred(jobId, block.number);
            return;
        }
        address[] memory drawn = _draw(keccak256(abi.encode(seed, jobId)), job);
        job.committee = drawn;
        emit CommitteeDrawn(jobId, drawn, job.acceptBy);
    }

    /// @notice A drawn member takes the job on: from now on it is paid for signing the result and
    /// penalized if the job expires unsettled. A member that never accepts is never penalized.
    function acceptJob(uint256 jobId) external {
        Job storage job = _job(jobId);
        if (job.state != JobState.Posted) revert MarketplaceJobNotPosted(jobId, job.state);
        if (block.timestamp > job.acceptBy) revert MarketplaceAcceptWindowClosed(jobId, job.acceptBy);
        uint256 bit = _memberBit(job, msg.sender);
        if (bit == 0) revert MarketplaceSignerNotInCommittee(jobId, msg.sender);
        if (job.acceptedMask & bit != 0) revert MarketplaceAlreadyAccepted(jobId, msg.sender);
        job.acceptedMask |= uint16(bit);
        emit JobAccepted(jobId, msg.sender);
    }

    /// @notice Settles a job with a quorum of accepted members' signatures over `result`: pays
    /// each signer its share of the fee (the fee divided among the members that accepted; the
    /// others claim theirs with `claimFee`), makes the payout pool claimable under
    /// `result.payoutRoot`, applies provider slashes (each within its provider's signed cap, and
    /// capped at what is left of its stake), refunds `budget - fee - payoutTotal` to the buyer.
    /// @param result The signed result.
    /// @param consents One per `result.slashes` entry, in the same order.
    /// @param signatures Accepted members' signatures over `result`, in ascending signer order.
    function finalize(Result calldata result, SlashConsent[] calldata consents, bytes[] calldata signatures)
        external
        nonReentrant
    {
        Job storage job = _requireSettleable(result.jobId);
        if (result.participants < job.minParticipants) {
            revert MarketplaceTooFewParticipants(result.jobId, result.participants, job.minParticipants);
        }
        bytes32 digest = _hashTypedDataV4(_hashResult(result));
        (address[] memory signers, uint256 signerMask) = _checkQuorum(result.jobId, job, digest, signatures);
        job.settledDigest = digest;
        (uint256 feeEach, uint256 refund, uint256 burned) = _settle(job, result, consents, signerMask);
        for (uint256 i = 0; i < signers.length; ++i) {
            _payFee(result.jobId, signers[i], feeEach);
        }
        if (refund > 0) _token.safeTransfer(job.buyer, refund);
        _burn(burned);
    }

    /// @notice An accepted member that signed the finalized result but was left out of the
    /// `finalize` call takes its fee share with its signature, until the report window closes.
    function claimFee(uint256 jobId, bytes calldata signature) external nonReentrant {
        Job storage job = _job(jobId);
        if (job.state != JobState.Finalized) revert MarketplaceJobNotFinalized(jobId, job.state);
        uint256 closesAt = _reportClosesAt(job);
        if (block.timestamp > closesAt) revert MarketplaceFeeClaimClosed(jobId, closesAt);
        address node = _recover(job.settledDigest, signature, 0);
        uint256 bit = _memberBit(job, node);
        if (bit == 0 || job.acceptedMask & bit == 0) revert MarketplaceSignerNotAccepted(jobId, node);
        if (job.feePaidMask & bit != 0) revert MarketplaceFeeAlreadyPaid(jobId, node);
        job.feePaidMask |= uint16(bit);
        uint256 amount = _feeEach(job);
        job.feeHeld -= uint128(amount); // held = amount × accepted members not yet paid
        _totalEscrowed -= amount;
        _payFee(jobId, node, amount);
    }

    /// @notice After the report window, refunds to the buyer the fee shares nobody claimed.
    function releaseFees(uint256 jobId) external nonReentrant {
        Job storage job = _job(jobId);
        if (job.state != JobState.Finalized) revert MarketplaceJobNotFinalized(jobId, job.state);
        uint256 closesAt = _reportClosesAt(job);
        if (block.timestamp <= closesAt) revert MarketplaceFeeClaimOpen(jobId, closesAt);
        uint256 held = job.feeHeld;
        if (held == 0) revert MarketplaceZeroAmount();
        job.feeHeld = 0;
        _totalEscrowed -= held;
        emit FeesReleased(jobId, held);
        _token.safeTransfer(job.buyer, held);
    }

    /// @notice Ends a job that cannot meet its thresholds, with a quorum of accepted members'
    /// signatures over `Abort(jobId, reason)`. The buyer gets the whole budget back; nobody is
    /// paid or slashed.
    function abort(uint256 jobId, string calldata reason, bytes[] calldata signatures) external nonReentrant {
        Job storage job = _requireSettleable(jobId);
        _checkQuorum(jobId, job, _abortDigest(jobId, reason), signatures);
        uint256 budget = job.budget;
        job.state = JobState.Aborted;
        _totalEscrowed -= budget;
        emit JobAborted(jobId, reason, budget);
        _token.safeTransfer(job.buyer, budget);
    }

    /// @notice Anyone may expire a job nobody settled: the buyer gets the whole budget back. A job
    /// whose committee was not drawn, or whose quorum did not accept, by `acceptBy` expires then and
    /// penalizes nobody; a staffed job expires after `deadline + settlementGrace`, and every member
    /// that accepted it loses the liveness penalty (burned). Members that never accepted lose nothing.
    function expire(uint256 jobId) external nonReentrant {
        Job storage job = _job(jobId);
        if (job.state != JobState.Posted) revert MarketplaceJobNotPosted(jobId, job.state);
        bool staffed = _popcount(job.acceptedMask) >= job.quorum;
        uint256 expiresAt = staffed ? uint256(job.deadline) + _settlementGrace : job.acceptBy;
        if (block.timestamp <= expiresAt) revert MarketplaceJobNotExpired(jobId, expiresAt + 1);
        uint256 budget = job.budget;
        job.state = JobState.Expired;
        _totalEscrowed -= budget;
        uint256 penalties;
        address[] storage committee = job.committee;
        uint256 accepted = job.acceptedMask;
        for (uint256 i = 0; staffed && i < committee.length; ++i) {
            if (accepted & (1 << i) == 0) continue;
            HeavyNode storage node = _heavyNodes[committee[i]];
            uint256 penalty = _min(_livenessPenalty, node.stake);
            node.stake -= uint128(penalty);
            penalties += penalty;
            _syncPool(committee[i]);
            emit HeavyNodePenalized(jobId, committee[i], penalty);
        }
        _totalStaked -= penalties;
        emit JobExpired(jobId, budget);
        _token.safeTransfer(job.buyer, budget);
        _burn(penalties);
    }

    /// @notice Pays `amount` to `account` from a finalized job's payout tree. Anyone may submit a
    /// claim for anyone; the tokens always go to `account`. One claim per leaf.
    /// @param proof OpenZeppelin StandardMerkleTree proof of the leaf `(account, amount)`.
    function claim(uint256 jobId, address account, uint256 amount, bytes32[] calldata proof)
        external
        nonReentrant
    {
        Job storage job = _jobs[jobId];
        if (job.state != JobState.Finalized) revert MarketplaceJobNotFinalized(jobId, job.state);
        bytes32 leaf = _leaf(account, amount);
        if (_claimed[jobId][leaf]) revert MarketplaceAlreadyClaimed(jobId, account);
        if (!MerkleProof.verifyCalldata(proof, job.payoutRoot, leaf)) {
            revert MarketplaceInvalidProof(jobId, account, amount);
        }
        uint256 unclaimed = job.unclaimed;
        // A committee can only sign a tree whose leaves exceed its pool by misconduct (or a slash
        // capped below what it signed); this stops such a tree from paying out other jobs' escrow.
        if (amount > unclaimed) revert MarketplacePayoutPoolExhausted(jobId, amount, unclaimed);
        _claimed[jobId][leaf] = true;
        unchecked {
            // amount ≤ unclaimed ≤ _totalUnclaimed, checked above.
            job.unclaimed = uint128(unclaimed - amount);
            _totalUnclaimed -= amount;
        }
        emit PayoutClaimed(jobId, account, amount);
        _token.safeTransfer(account, amount);
    }

    /// @notice Slashes a heavy node that signed two different results for the same job; the reporter
    /// receives `reporterRewardBps` of the slash (nothing when it reports itself) and the rest is
    /// burned. Once per node and job.
    function reportEquivocation(Result calldata a, bytes calldata sigA, Result calldata b, bytes calldata sigB)
        external
        nonReentrant
    {
        uint256 jobId = a.jobId;
        bytes32 hashA = _hashResult(a);
        bytes32 hashB = _hashResult(b);
        if (b.jobId != jobId || hashA == hashB) revert MarketplaceNotEquivocation(jobId);
        _slashEquivocation(jobId, _hashTypedDataV4(hashA), sigA, _hashTypedDataV4(hashB), sigB);
    }

    /// @notice Slashes a heavy node that signed both a result and an abort for the same job, as
    /// `reportEquivocation` does for two results.
    function reportAbortEquivocation(
        Result calldata result,
        bytes calldata resultSignature,
        string calldata reason,
        bytes calldata abortSignature
    ) external nonReentrant {
        uint256 jobId = result.jobId;
        _slashEquivocation(
            jobId,
            _hashTypedDataV4(_hashResult(result)),
            resultSignature,
            _abortDigest(jobId, reason),
            abortSignature
        );
    }

    // =================================================================== heavy nodes
    /// @notice Registers the caller as a heavy node with a stake, an HTTP endpoint and the X25519
    /// public key that light nodes seal shares to.
    function registerHeavyNode(uint256 amount, string calldata endpoint, bytes32 encryptionKey)
        external
        nonReentrant
    {
        _registerHeavyNode(amount, endpoint, encryptionKey);
    }

    /// @notice Like `registerHeavyNode`, approving the stake with an EIP-2612 permit in the same
    /// transaction; a failed permit is handled as in `postJobWithPermit`.
    function registerHeavyNodeWithPermit(
        uint256 amount,
        string calldata endpoint,
        bytes32 encryptionKey,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant {
        _permit(amount, permitDeadline, v, r, s);
        _registerHeavyNode(amount, endpoint, encryptionKey);
    }

    function _registerHeavyNode(uint256 amount, string calldata endpoint, bytes32 encryptionKey) private {
        HeavyNode storage node = _heavyNodes[msg.sender];
        if (node.registered) revert MarketplaceHeavyNodeAlreadyRegistered(msg.sender);
        if (bytes(endpoint).length == 0) revert MarketplaceEmptyEndpoint();
        if (amount < _minHeavyNodeStake) revert MarketplaceStakeTooLow(amount, _minHeavyNodeStake);
        _checkAmount(amount);
        node.registered = true;
        node.stake = uint128(amount);
        node.endpoint = endpoint;
        node.encryptionKey = encryptionKey;
        _totalStaked += amount;
        _syncPool(msg.sender);
        emit HeavyNodeRegistered(msg.sender, amount, endpoint, encryptionKey);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Changes the caller's endpoint and encryption key.
    function updateHeavyNode(string calldata endpoint, bytes32 encryptionKey) external {
        HeavyNode storage node = _activeHeavyNode(msg.sender);
        if (bytes(endpoint).length == 0) revert MarketplaceEmptyEndpoint();
        node.endpoint = endpoint;
        node.encryptionKey = encryptionKey;
        emit HeavyNodeUpdated(msg.sender, endpoint, encryptionKey);
    }

    /// @notice Adds `amount` to the caller's heavy-node stake.
    function topUpHeavyNode(uint256 amount) external nonReentrant {
        HeavyNode storage node = _activeHeavyNode(msg.sender);
        if (amount == 0) revert MarketplaceZeroAmount();
        _checkAmount(uint256(node.stake) + amount);
        node.stake += uint128(amount);
        _totalStaked += amount;
        _syncPool(msg.sender); // back in the pool if a penalty had left it below the minimum
        emit HeavyNodeToppedUp(msg.sender, amount, node.stake);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Starts unbonding: the node can serve no new job and can withdraw after `unbondingPeriod`.
    function requestHeavyNodeUnstake() external {
        HeavyNode storage node = _activeHeavyNode(msg.sender);
        node.unstakeRequestedAt = uint64(block.timestamp);
        _syncPool(msg.sender);
        emit HeavyNodeUnstakeRequested(msg.sender, block.timestamp + _unbondingPeriod);
    }

    /// @notice Withdraws an unbonded heavy-node stake and deregisters the node.
    function withdrawHeavyNode() external nonReentrant {
        HeavyNode storage node = _heavyNodes[msg.sender];
        if (!node.registered) revert MarketplaceHeavyNodeNotRegistered(msg.sender);
        uint256 amount = _unbondedStake(node.unstakeRequestedAt, node.stake);
        delete _heavyNodes[msg.sender];
        _totalStaked -= amount;
        emit HeavyNodeWithdrawn(msg.sender, amount);
        if (amount > 0) _token.safeTransfer(msg.sender, amount);
    }

    // =================================================================== datasets
    /// @notice Stakes `amount` on a new dataset owned by the caller.
    /// @param datasetId The provider's identifier (e.g. the hash of its metadata); must be unused.
    /// @param metadataURI Where the schema and mock data can be fetched.
    function stakeDataset(bytes32 datasetId, uint256 amount, string calldata metadataURI) external nonReentrant {
        _stakeDataset(datasetId, amount, metadataURI);
    }

    /// @notice Like `stakeDataset`, approving the stake with an EIP-2612 permit in the same
    /// transaction, so that a provider with tokens stakes in one transaction. A failed permit is
    /// handled as in `postJobWithPermit`.
    /// @param permitDeadline The deadline of the caller's permit of `amount` to this contract;
    /// `v`, `r`, `s` are its signature.
    function stakeDatasetWithPermit(
        bytes32 datasetId,
        uint256 amount,
        string calldata metadataURI,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant {
        _permit(amount, permitDeadline, v, r, s);
        _stakeDataset(datasetId, amount, metadataURI);
    }

    function _stakeDataset(bytes32 datasetId, uint256 amount, string calldata metadataURI) private {
        Dataset storage d = _datasets[datasetId];
        if (d.owner != address(0)) revert MarketplaceDatasetExists(datasetId);
        if (amount < _minDatasetStake) revert MarketplaceStakeTooLow(amount, _minDatasetStake);
        _checkAmount(amount);
        d.owner = msg.sender;
        d.stake = uint128(amount);
        d.metadataURI = metadataURI;
        _totalStaked += amount;
        emit DatasetStaked(datasetId, msg.sender, amount, metadataURI);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Adds `amount` to an active dataset stake owned by the caller.
    function topUpDataset(bytes32 datasetId, uint256 amount) external nonReentrant {
        Dataset storage d = _ownedDataset(datasetId);
        if (d.unstakeRequestedAt != 0) revert MarketplaceAlreadyUnbonding(d.unstakeRequestedAt + _unbondingPeriod);
        if (amount == 0) revert MarketplaceZeroAmount();
        _checkAmount(uint256(d.stake) + amount);
        d.stake += uint128(amount);
        _totalStaked += amount;
        emit DatasetToppedUp(datasetId, amount, d.stake);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Starts unbonding a dataset stake: it joins no job posted from now on.
    function requestDatasetUnstake(bytes32 datasetId) external {
        Dataset storage d = _ownedDataset(datasetId);
        if (d.unstakeRequestedAt != 0) revert MarketplaceAlreadyUnbonding(d.unstakeRequestedAt + _unbondingPeriod);
        d.unstakeRequestedAt = uint64(block.timestamp);
        emit DatasetUnstakeRequested(datasetId, block.timestamp + _unbondingPeriod);
    }

    /// @notice Withdraws an unbonded dataset stake and frees the id.
    function withdrawDataset(bytes32 datasetId) external nonReentrant {
        Dataset storage d = _ownedDataset(datasetId);
        uint256 amount = _unbondedStake(d.unstakeRequestedAt, d.stake);
        delete _datasets[datasetId];
        _totalStaked -= amount;
        emit DatasetWithdrawn(datasetId, msg.sender, amount);
        if (amount > 0) _token.safeTransfer(msg.sender, amount);
    }

    // =================================================================== views
    /// @notice The token used for budgets, stakes and fees.
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @notice The deployment parameters.
    function config() external view returns (Config memory) {
        return Config(
            _maxJobWindow,
            _settlementGrace,
            _reportWindow,
            _unbondingPeriod,
            _minHeavyNodeStake,
            _minDatasetStake,
            _livenessPenalty,
            _equivocationSlashBps,
            _reporterRewardBps,
            _acceptWindow
        );
    }

    /// @notice Number of jobs posted; ids run from 1 to `jobCount()`.
    function jobCount() external view returns (uint256) {
        return _jobCount;
    }

    /// @notice The state of a job (`None` for an unknown id).
    function jobState(uint256 jobId) external view returns (JobState) {
        return _jobs[jobId].state;
    }

    /// @notice Everything stored about a job.
    function getJob(uint256 jobId) external view returns (JobView memory) {
        Job storage job = _job(jobId);
        return JobView(
            job.state,
            job.buyer,
            job.specHash,
            job.budget,
            job.feeBps,
            job.postedAt,
            job.deadline,
            job.minParticipants,
            job.quorum,
            job.maxSlashBps,
            job.committee,
            job.resultHash,
            job.payoutRoot,
            job.unclaimed,
            job.committeeSize,
            job.acceptedMask,
            job.drawBlock,
            job.acceptBy,
            job.feeHeld
        );
    }

    /// @notice Whether light nodes may submit to the job: its committee is drawn, a quorum
    /// accepted, and acceptance is over (every member accepted, or `acceptBy` passed).
    function committeeReady(uint256 jobId) external view returns (bool) {
        Job storage job = _job(jobId);
        uint256 accepted = _popcount(job.acceptedMask);
        return job.state == JobState.Posted && job.committee.length != 0 && accepted >= job.quorum
            && (accepted == job.committee.length || block.timestamp > job.acceptBy);
    }

    /// @notice The active heavy nodes committees are drawn from, in the order they joined.
    function heavyNodeRegistry() external view returns (address[] memory active) {
        active = new address[](_activeHeavyNodes);
        uint256 found;
        for (uint256 i = 0; found < active.length; ++i) {
            if (_pool[i].leftAt == 0) active[found++] = _pool[i].node;
        }
    }

    /// @notice Whether the leaf `(account, amount)` of a job's payout tree was claimed.
    function isClaimed(uint256 jobId, address account, uint256 amount) external view returns (bool) {
        return _claimed[jobId][_leaf(account, amount)];
    }

    /// @notice A heavy node's registration (all zero when unregistered).
    function getHeavyNode(address node) external view returns (HeavyNode memory) {
        return _heavyNodes[node];
    }

    /// @notice Whether `node` is registered, not unbonding and staked at least the minimum.
    function isActiveHeavyNode(address node) public view returns (bool) {
        HeavyNode storage record = _heavyNodes[node];
        return record.registered && record.unstakeRequestedAt == 0 && record.stake >= _minHeavyNodeStake;
    }

    /// @notice A dataset's stake record (all zero when unknown).
    function getDataset(bytes32 datasetId) external view returns (Dataset memory) {
        return _datasets[datasetId];
    }

    /// @notice Whether a dataset may join jobs posted now.
    function isActiveDataset(bytes32 datasetId) external view returns (bool) {
        Dataset storage d = _datasets[datasetId];
        return d.owner != address(0) && d.unstakeRequestedAt == 0;
    }

    /// @notice Whether a heavy node was already slashed for equivocating in a job.
    function equivocationReported(uint256 jobId, address node) external view returns (bool) {
        return _equivocationReported[jobId][node];
    }

    /// @notice Tokens escrowed for jobs still `Posted`.
    function totalEscrowed() external view returns (uint256) {
        return _totalEscrowed;
    }

    /// @notice Tokens staked by heavy nodes and datasets, unbonding or not.
    function totalStaked() external view returns (uint256) {
        return _totalStaked;
    }

    /// @notice Tokens claimable in finalized jobs' payout trees and not yet claimed.
    function totalUnclaimed() external view returns (uint256) {
        return _totalUnclaimed;
    }

    /// @notice Tokens this contract has burned (slashes and penalties).
    function totalBurned() external view returns (uint256) {
        return _totalBurned;
    }

    /// @notice The EIP-712 digest committee members sign for `result`.
    function resultDigest(Result calldata result) external view returns (bytes32) {
        return _hashTypedDataV4(_hashResult(result));
    }

    /// @notice The EIP-712 digest committee members sign to abort a job.
    function abortDigest(uint256 jobId, string calldata reason) external view returns (bytes32) {
        return _abortDigest(jobId, reason);
    }

    /// @notice The EIP-712 digest a dataset owner signs to join a job with a slash cap.
    function participationDigest(uint256 jobId, bytes32 datasetId, uint16 maxSlashBps)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(PARTICIPATION_TYPEHASH, jobId, datasetId, maxSlashBps)));
    }

    /// @notice The payout-tree leaf for `(account, amount)`, as OpenZeppelin's StandardMerkleTree.
    function payoutLeaf(address account, uint256 amount) external pure returns (bytes32) {
        return _leaf(account, amount);
    }

    // =================================================================== internal
    function _postJob(JobParams calldata p) private returns (uint256 jobId) {
        if (p.budget == 0) revert MarketplaceZeroAmount();
        _checkAmount(p.budget);
        if (p.feeBps > MAX_FEE_BPS) revert MarketplaceFeeTooHigh(p.feeBps, MAX_FEE_BPS);
        if (p.maxSlashBps > BPS) revert MarketplaceSlashBpsTooHigh(p.maxSlashBps);
        uint256 latest = block.timestamp + _maxJobWindow;
        if (p.deadline <= block.timestamp || p.deadline > latest) {
            revert MarketplaceDeadlineOutOfRange(p.deadline, block.timestamp + 1, latest);
        }
        if (p.minParticipants == 0) revert MarketplaceInvalidMinParticipants();
        uint256 size = p.committeeSize;
        if (size == 0 || size > MAX_COMMITTEE) revert MarketplaceInvalidCommitteeSize(size, MAX_COMMITTEE);
        // A strict majority: two conflicting results cannot both reach quorum unless some member
        // signed both, which `reportEquivocation` punishes.
        if (p.quorum == 0 || p.quorum > size || 2 * uint256(p.quorum) <= size) {
            revert MarketplaceInvalidQuorum(p.quorum, size);
        }
        if (p.maxSlashBps > 0 && size < MIN_SLASHING_COMMITTEE) {
            revert MarketplaceCommitteeTooSmallToSlash(size, MIN_SLASHING_COMMITTEE);
        }
        uint256 available = _activeHeavyNodes - (isActiveHeavyNode(msg.sender) ? 1 : 0);
        if (available < size) revert MarketplaceNotEnoughHeavyNodes(available, size);

        jobId = ++_jobCount;
        Job storage job = _jobs[jobId];
        job.buyer = msg.sender;
        job.deadline = p.deadline;
        job.feeBps = p.feeBps;
        job.quorum = p.quorum;
        job.state = JobState.Posted;
        job.budget = uint128(p.budget);
        job.postedAt = uint64(block.timestamp);
        job.minParticipants = p.minParticipants;
        job.maxSlashBps = p.maxSlashBps;
        job.committeeSize = uint8(size);
        job.drawBlock = uint64(block.number);
        job.poolSize = uint32(_pool.length);
        job.acceptBy = uint64(_min(block.timestamp + _acceptWindow, p.deadline));
        job.specHash = p.specHash;
        _totalEscrowed += p.budget;
        emit JobPosted(jobId, msg.sender, p);
        _token.safeTransferFrom(msg.sender, address(this), p.budget);
    }

    /// @dev The one place that decides whether a job can still be finalized or aborted.
    function _requireSettleable(uint256 jobId) private view returns (Job storage job) {
        job = _job(jobId);
        if (job.state != JobState.Posted) revert MarketplaceJobNotPosted(jobId, job.state);
        uint256 closesAt = uint256(job.deadline) + _settlementGrace;
        if (block.timestamp > closesAt) revert MarketplaceSettlementClosed(jobId, closesAt);
    }

    function _job(uint256 jobId) private view returns (Job storage job) {
        job = _jobs[jobId];
        if (job.state == JobState.None) revert MarketplaceJobNotFound(jobId);
    }

    /// @dev Recovers each signer, requires strictly ascending accepted members and a quorum.
    /// Walks the (sorted) committee once: O(committee size). Returns the signers and their bits.
    function _checkQuorum(uint256 jobId, Job storage job, bytes32 digest, bytes[] calldata signatures)
        private
        view
        returns (address[] memory signers, uint256 mask)
    {
        if (signatures.length < job.quorum) revert MarketplaceQuorumNotMet(jobId, signatures.length, job.quorum);
        address[] storage committee = job.committee;
        uint256 size = committee.length;
        uint256 accepted = job.acceptedMask;
        signers = new address[](signatures.length);
        uint256 next;
        for (uint256 i = 0; i < signatures.length; ++i) {
            address signer = _recover(digest, signatures[i], i);
            while (next < size && committee[next] != signer) ++next;
            if (next == size) {
                if (_memberBit(job, signer) != 0) revert MarketplaceSignaturesNotSorted(jobId, i);
                revert MarketplaceSignerNotInCommittee(jobId, signer);
            }
            if (accepted & (1 << next) == 0) revert MarketplaceSignerNotAccepted(jobId, signer);
            signers[i] = signer;
            mask |= 1 << next;
            ++next;
        }
    }

    /// @dev Checks and applies each slash; O(1) per slash. Returns the totals signed and applied.
    function _applySlashes(uint256 jobId, Job storage job, Slash[] calldata slashes, SlashConsent[] calldata consents)
        private
        returns (uint256 signed, uint256 total)
    {
        if (slashes.length != consents.length) revert MarketplaceSlashConsentMismatch(slashes.length, consents.length);
        for (uint256 i = 0; i < slashes.length; ++i) {
            if (i > 0 && slashes[i].datasetId <= slashes[i - 1].datasetId) revert MarketplaceSlashesNotSorted(i);
            signed += slashes[i].amount;
            total += _applySlash(jobId, job, slashes[i], consents[i], i);
        }
    }

    /// @dev One provider slash: the owner's `Participation` signature and the cap
    /// `stake × min(signed maxSlashBps, job maxSlashBps) / 10_000`.
    function _applySlash(uint256 jobId, Job storage job, Slash calldata slash, SlashConsent calldata consent, uint256 i)
        private
        returns (uint256 amount)
    {
        bytes32 datasetId = slash.datasetId;
        Dataset storage d = _datasets[datasetId];
        if (d.owner == address(0)) revert MarketplaceDatasetNotFound(datasetId);
        // A dataset that asked to unbond before the job was posted could not join it.
        if (d.unstakeRequestedAt != 0 && d.unstakeRequestedAt <= job.postedAt) {
            revert MarketplaceDatasetNotActive(datasetId);
        }
        address signer = _recover(participationDigest(jobId, datasetId, consent.maxSlashBps), consent.signature, i);
        if (signer != d.owner) revert MarketplaceParticipationNotSigned(jobId, datasetId, signer);
        // No provider sits on the committee that judges it (it could slash itself into payouts).
        if (_memberBit(job, d.owner) != 0) revert MarketplaceSlashedOwnerInCommittee(datasetId, d.owner);
        uint256 bps = _min(consent.maxSlashBps, job.maxSlashBps);
        uint256 cap = uint256(d.stake) * bps / BPS;
        // Another job may have slashed this stake since the committee computed its slash: take
        // what the cap allows of what is left rather than block an honest settlement.
        amount = _min(slash.amount, cap);
        if (amount < slash.amount) emit SlashCapped(jobId, datasetId, slash.amount, amount);
        d.stake -= uint128(amount); // amount ≤ cap ≤ stake
        emit DatasetSlashed(jobId, datasetId, amount);
    }

    /// @dev Checks the money of a finalize and applies its effects (no transfers): the fee (one
    /// share per accepted member: the signers' paid now, the others' held for `claimFee`), the
    /// payout pool, the slashes, the refund and what is burned.
    function _settle(Job storage job, Result calldata result, SlashConsent[] calldata consents, uint256 signerMask)
        private
        returns (uint256 feeEach, uint256 refund, uint256 burned)
    {
        uint256 budget = job.budget;
        uint256 fee = budget * job.feeBps / BPS;
        // fee ≤ budget / 2 because feeBps ≤ MAX_FEE_BPS, so budget - fee cannot underflow.
        if (result.payoutTotal > budget - fee) {
            revert MarketplacePayoutAboveBudget(result.jobId, result.payoutTotal, budget - fee);
        }
        uint256 accepted = _popcount(job.acceptedMask); // ≥ quorum ≥ 1: the signers accepted
        feeEach = fee / accepted;
        uint256 held = feeEach * (accepted - _popcount(signerMask));
        // The rounding remainder of the fee goes back to the buyer.
        refund = budget - result.payoutTotal - feeEach * accepted;
        uint256 claimable;
        (claimable, burned) = _slashAll(job, result, consents);

        job.state = JobState.Finalized;
        job.payoutRoot = result.payoutRoot;
        job.resultHash = result.resultHash;
        job.unclaimed = uint128(claimable); // ≤ budget + Σ stakes, both < 2^128
        job.feePaidMask = uint16(signerMask);
        job.feeHeld = uint128(held);
        _totalEscrowed -= budget - held;
        _totalUnclaimed += claimable;
        _emitFinalized(result, claimable, fee, refund);
    }

    /// @dev Applies the slashes; returns what the payout tree may pay and what is burned.
    function _slashAll(Job storage job, Result calldata result, SlashConsent[] calldata consents)
        private
        returns (uint256 claimable, uint256 burned)
    {
        (uint256 signedTotal, uint256 slashedTotal) = _applySlashes(result.jobId, job, result.slashes, consents);
        if (result.slashedToPayouts > signedTotal) {
            revert MarketplaceSlashedToPayoutsTooHigh(result.slashedToPayouts, signedTotal);
        }
        uint256 toPayouts = _min(result.slashedToPayouts, slashedTotal);
        claimable = result.payoutTotal + toPayouts;
        burned = slashedTotal - toPayouts;
        _totalStaked -= slashedTotal;
    }

    function _emitFinalized(Result calldata result, uint256 claimable, uint256 fee, uint256 refund) private {
        emit JobFinalized(
            result.jobId,
            result.resultHash,
            result.resultURI,
            result.payoutRoot,
            claimable,
            result.participants,
            fee,
            refund
        );
    }

    function _payFee(uint256 jobId, address node, uint256 amount) private {
        if (amount == 0) return;
        _heavyNodes[node].feesEarned += uint128(amount);
        emit FeePaid(jobId, node, amount);
        _token.safeTransfer(node, amount);
    }

    /// @dev One signer's slash for two conflicting signed digests of one job (checked distinct by
    /// the caller); the reporter's reward is burned too when the node reports itself.
    function _slashEquivocation(uint256 jobId, bytes32 digestA, bytes calldata sigA, bytes32 digestB, bytes calldata sigB)
        private
    {
        Job storage job = _job(jobId);
        address node = _recover(digestA, sigA, 0);
        if (_recover(digestB, sigB, 1) != node) revert MarketplaceNotEquivocation(jobId);
        if (_memberBit(job, node) == 0) revert MarketplaceSignerNotInCommittee(jobId, node);
        uint256 closesAt = _reportClosesAt(job);
        if (block.timestamp > closesAt) revert MarketplaceReportWindowClosed(jobId, closesAt);
        if (_equivocationReported[jobId][node]) revert MarketplaceAlreadyReported(jobId, node);

        _equivocationReported[jobId][node] = true;
        HeavyNode storage record = _heavyNodes[node];
        uint256 slashed = uint256(record.stake) * _equivocationSlashBps / BPS;
        uint256 reward = msg.sender == node ? 0 : slashed * _reporterRewardBps / BPS;
        record.stake -= uint128(slashed);
        _totalStaked -= slashed;
        _syncPool(node);
        emit EquivocationReported(jobId, node, msg.sender, slashed, reward);
        if (reward > 0) _token.safeTransfer(msg.sender, reward);
        _burn(slashed - reward);
    }

    /// @dev `committeeSize` distinct heavy nodes other than the buyer that were active at the end
    /// of the draw block, by a partial Fisher-Yates shuffle of the first `poolSize` pool positions
    /// (swaps kept in memory), sorted ascending. Looks at no more than MAX_DRAW_TRIES positions,
    /// so the gas is bounded whatever the pool's size.
    function _draw(bytes32 seed, Job storage job) private view returns (address[] memory picked) {
        uint256 n = job.poolSize;
        uint256 size = job.committeeSize;
        uint256 drawBlock = job.drawBlock;
        address buyer = job.buyer;
        uint256 tries = _min(n, MAX_DRAW_TRIES);
        uint256[] memory swapFrom = new uint256[](tries);
        uint256[] memory swapTo = new uint256[](tries);
        picked = new address[](size);
        uint256 found;
        for (uint256 i = 0; i < tries && found < size; ++i) {
            uint256 j = i + uint256(keccak256(abi.encode(seed, i))) % (n - i);
            uint256 at = _swapped(swapFrom, swapTo, i, j);
            // Position j now holds what position i held (positions < i are spent).
            swapFrom[i] = j;
            swapTo[i] = _swapped(swapFrom, swapTo, i, i);
            PoolEntry memory entry = _pool[at];
            address node = entry.node;
            // In the pool at the end of the draw block: joined by then and not left by then.
            bool inPool = entry.joinedAt <= drawBlock && (entry.leftAt == 0 || entry.leftAt > drawBlock);
            if (node == buyer || !inPool) continue;
            // Insertion keeps `picked` ascending (size ≤ MAX_COMMITTEE).
            uint256 k = found++;
            while (k > 0 && picked[k - 1] > node) {
                picked[k] = picked[k - 1];
                --k;
            }
            picked[k] = node;
        }
        if (found < size) revert MarketplaceNotEnoughHeavyNodes(found, size);
    }

    /// @dev What registry position `position` holds after the first `count` swaps.
    function _swapped(uint256[] memory from, uint256[] memory to, uint256 count, uint256 position)
        private
        pure
        returns (uint256)
    {
        for (uint256 k = count; k > 0; --k) {
            if (from[k - 1] == position) return to[k - 1];
        }
        return position;
    }

    /// @dev Puts `node` in the draw pool or takes it out, as `isActiveHeavyNode` now says. Called
    /// after every change to a heavy node's registration, unbonding or stake.
    function _syncPool(address node) private {
        bool active = isActiveHeavyNode(node);
        uint256 position = _poolPosition[node];
        if (position == 0) {
            if (!active) return;
            _pool.push(PoolEntry(node, uint48(block.number), 0));
            _poolPosition[node] = _pool.length;
            ++_activeHeavyNodes;
            return;
        }
        PoolEntry storage entry = _pool[position - 1];
        if (active == (entry.leftAt == 0)) return;
        if (active) {
            // Back after leaving: drawable only by jobs whose draw block comes from now on.
            (entry.joinedAt, entry.leftAt) = (uint48(block.number), 0);
            ++_activeHeavyNodes;
        } else {
            entry.leftAt = uint48(block.number);
            --_activeHeavyNodes;
        }
    }

    function _abortDigest(uint256 jobId, string calldata reason) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ABORT_TYPEHASH, jobId, keccak256(bytes(reason)))));
    }

    function _reportClosesAt(Job storage job) private view returns (uint256) {
        return uint256(job.deadline) + _settlementGrace + _reportWindow;
    }

    function _feeEach(Job storage job) private view returns (uint256) {
        return uint256(job.budget) * job.feeBps / BPS / _popcount(job.acceptedMask);
    }

    /// @dev The bit of `node` in the job's committee masks; 0 when it is not a member.
    function _memberBit(Job storage job, address node) private view returns (uint256) {
        address[] storage committee = job.committee;
        for (uint256 i = 0; i < committee.length; ++i) {
            if (committee[i] == node) return 1 << i;
        }
        return 0;
    }

    function _popcount(uint256 mask) private pure returns (uint256 count) {
        for (; mask != 0; mask &= mask - 1) ++count;
    }

    function _hashResult(Result calldata r) private pure returns (bytes32) {
        bytes32[] memory slashHashes = new bytes32[](r.slashes.length);
        for (uint256 i = 0; i < r.slashes.length; ++i) {
            slashHashes[i] = keccak256(abi.encode(SLASH_TYPEHASH, r.slashes[i].datasetId, r.slashes[i].amount));
        }
        return keccak256(
            abi.encode(
                RESULT_TYPEHASH,
                r.jobId,
                r.resultHash,
                keccak256(bytes(r.resultURI)),
                r.payoutRoot,
                r.payoutTotal,
                r.slashedToPayouts,
                r.participants,
                keccak256(abi.encodePacked(slashHashes))
            )
        );
    }

    function _recover(bytes32 digest, bytes calldata signature, uint256 index) private pure returns (address) {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError) revert MarketplaceInvalidSignature(index);
        return signer;
    }

    /// @dev Runs the caller's EIP-2612 permit of `amount` to this contract. Anyone who saw the
    /// signed permit (in the mempool) may submit it first: then this call fails on the used nonce
    /// although the allowance is in place, so a failure is ignored when the allowance covers
    /// `amount`. Otherwise the permit's own error (`ERC2612ExpiredSignature`,
    /// `ERC2612InvalidSigner`, ...) is raised, and the transaction changes nothing.
    function _permit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) private {
        try IERC20Permit(address(_token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {}
        catch (bytes memory reason) {
            if (_token.allowance(msg.sender, address(this)) < amount) {
                assembly ("memory-safe") {
                    revert(add(reason, 0x20), mload(reason))
                }
            }
        }
    }

    function _activeHeavyNode(address account) private view returns (HeavyNode storage node) {
        node = _heavyNodes[account];
        if (!node.registered) revert MarketplaceHeavyNodeNotRegistered(account);
        if (node.unstakeRequestedAt != 0) {
            revert MarketplaceAlreadyUnbonding(node.unstakeRequestedAt + _unbondingPeriod);
        }
    }

    function _ownedDataset(bytes32 datasetId) private view returns (Dataset storage d) {
        d = _datasets[datasetId];
        if (d.owner == address(0)) revert MarketplaceDatasetNotFound(datasetId);
        if (d.owner != msg.sender) revert MarketplaceNotDatasetOwner(datasetId, d.owner);
    }

    /// @dev The stake once unbonding has run its course; reverts while it has not.
    function _unbondedStake(uint64 requestedAt, uint128 stake) private view returns (uint256) {
        if (requestedAt == 0) revert MarketplaceNotUnbonding();
        uint256 unlockAt = uint256(requestedAt) + _unbondingPeriod;
        if (block.timestamp < unlockAt) revert MarketplaceStillUnbonding(unlockAt);
        return stake;
    }

    function _burn(uint256 amount) private {
        if (amount == 0) return;
        _totalBurned += amount;
        emit TokensBurned(amount);
        ERC20Burnable(address(_token)).burn(amount);
    }

    function _checkAmount(uint256 amount) private pure {
        if (amount > type(uint128).max) revert MarketplaceAmountTooLarge(amount, type(uint128).max);
    }

    function _leaf(address account, uint256 amount) private pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, amount))));
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }
}
