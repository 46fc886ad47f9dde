// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @dev The two ERC-20 calls the task makes. Return data is checked the lenient way
///      (empty or `true`), so tokens that return nothing work too.
interface IERC20Transfers {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title FlockTask
/// @notice One federated-learning task: participants, stakes, rounds, votes, rewards
///         and slashes. docs/protocol.md "The chain" and "A round" is the behaviour;
///         docs/contracts.md fixes the interface.
/// @dev Stake changes are "lazily effective": each participant has one packed
///      entry {prior, next, changeRound}. A change made while round c is current
///      applies from round c+1; the stake counted in round r is `next` if
///      r >= changeRound, else `prior`. So openRound never iterates participants:
///      it only reads a counter of wallets whose `next` stake reaches minStake,
///      and electRoles reads one storage slot per participant.
contract FlockTask {
    // ------------------------------------------------------------------ types

    struct TaskParams {
        address token;
        bytes32 modelSpecHash;
        bytes32 configHash;
        bytes32 initialModelHash;
        uint32 totalRounds;
        uint16 proposersPerRound;
        uint16 votersPerRound;
        uint16 maxParticipants;
        uint256 minStake;
        uint32 trainSeconds;
        uint32 commitSeconds;
        uint32 revealSeconds;
        uint16 quorumBps;
        uint16 slashBps;
        uint16 idleSlashBps;
        uint256 rewardPerRound;
        uint16 proposerShareBps;
        uint16 seedDelay;
    }

    enum Phase {
        None,
        Seeding,
        Train,
        Commit,
        Reveal,
        Finalizable,
        Finalized,
        Voided
    }

    struct ParticipantView {
        address wallet;
        bytes peerId;
        bytes32 boxPublicKey;
        string[] multiaddrs;
        bytes peerSig;
        uint256 stake;
        uint256 pendingUnstake;
        uint256 rewards;
        uint256 slashed;
        uint64 registeredAt;
        uint64 lastElectedRound;
    }

    struct UpdateView {
        bool submitted;
        bytes32 updateHash;
        bytes32 blobId;
        uint64 size;
    }

    struct VoteView {
        bool committed;
        bool revealed;
        bytes32 commitment;
        bytes32 aggregateHash;
        uint256 includedBits;
        uint256 rejectedBits;
        uint256 flagBits;
        int64 score;
    }

    struct RoundView {
        uint256 round;
        Phase phase;
        uint64 seedBlock;
        bytes32 seed;
        uint64 electedAt;
        uint64 trainEnd;
        uint64 commitEnd;
        uint64 revealEnd;
        address[] eligible;
        uint256[] eligibleStakes;
        address[] proposers;
        address[] voters;
        UpdateView[] updates;
        VoteView[] votes;
        bool finalized;
        bool accepted;
        bytes32 winningHash;
        uint256 winningIncludedBits;
        bytes32 globalModelHashAfter;
    }

    /// @dev One storage slot: the stake counted before and from `changeRound`.
    struct StakeEntry {
        uint112 prior;
        uint112 next;
        uint32 changeRound;
    }

    struct Participant {
        bool registered;
        uint64 index; // registration order = position in _registry and _stakes
        uint64 lastElectedRound;
        uint16 lastSeat; // seat in lastElectedRound: < P proposer, else voter P+j
        uint64 unstakeRound; // round current at the last requestUnstake
        uint32 joinedAt; // timestamp of the registration (eviction grace)
        uint256 pendingUnstake;
        uint256 rewards;
        uint256 slashed;
        bytes32 boxPublicKey;
        bytes peerId;
        bytes peerSig;
        string[] multiaddrs;
    }

    struct Update {
        bool submitted;
        uint64 size;
        bytes32 updateHash;
        bytes32 blobId;
    }

    struct Vote {
        bool committed;
        bool revealed;
        int64 score;
        bytes32 commitment;
        bytes32 aggregateHash;
        uint256 includedBits;
        uint256 rejectedBits;
        uint256 flagBits;
    }

    struct Round {
        uint64 seedBlock;
        uint64 electedAt;
        uint8 status;
        bool accepted;
        uint16 submittedCount;
        uint16 committedCount;
        uint16 revealedCount;
        uint64 trainEnd;
        uint64 commitEnd;
        uint64 revealEnd;
        uint64 winnerSeats; // bit j: voter seat j was in the winning group
        uint64 baseRound; // for a round that adopted a model: the model round it replaced
        bytes32 seed;
        bytes32 winningHash;
        uint256 winningIncludedBits;
        bytes32 globalModelHashAfter;
        address[] seats; // proposers then voters
        mapping(uint256 => Update) updates; // by proposer seat
        mapping(uint256 => Vote) votes; // by voter seat
    }

    // -------------------------------------------------------------- constants

    uint8 private constant ST_OPEN = 1;
    uint8 private constant ST_ELECTED = 2;
    uint8 private constant ST_FINALIZED = 3;
    uint8 private constant ST_VOIDED = 4;
    uint256 private constant BPS = 10_000;
    uint256 private constant BLOCKHASH_WINDOW = 256;
    uint256 private constant SEED_CONFIRMATIONS = 2;
    uint256 private constant MAX_PARTICIPANTS = 1024;
    uint256 private constant MAX_SEATS = 64; // electRoles at 64+64 seats, 999 wallets: 8.07M gas
    uint256 private constant MAX_PEER_ID_BYTES = 128;
    uint256 private constant PEER_SIG_BYTES = 64;
    uint256 private constant MAX_MULTIADDRS = 8;
    uint256 private constant MAX_MULTIADDR_BYTES = 256;
    uint256 private constant MAX_SEED_DELAY = 64;
    uint256 private constant DRAW_BLOCK = 16;
    uint256 private constant EVICTION_GRACE = 600; // seconds a new registration has to stake
    // X25519 public keys of small order (libsodium's has_small_order list): 0, 1,
    // the two points of order 8, p - 1, and p, p + 1 (0 and 1 written
    // non-canonically). Listed with the top bit of the last byte clear: X25519
    // ignores that bit, so each has a second encoding with it set, refused too.
    bytes32 private constant LOW_ORDER_0 = 0x0000000000000000000000000000000000000000000000000000000000000000;
    bytes32 private constant LOW_ORDER_1 = 0x0100000000000000000000000000000000000000000000000000000000000000;
    bytes32 private constant LOW_ORDER_2 = 0xe0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800;
    bytes32 private constant LOW_ORDER_3 = 0x5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157;
    bytes32 private constant LOW_ORDER_4 = 0xecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f;
    bytes32 private constant LOW_ORDER_5 = 0xedffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f;
    bytes32 private constant LOW_ORDER_6 = 0xeeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f;

    // ------------------------------------------------------------------ state

    TaskParams private _params;
    address[] private _registry;
    StakeEntry[] private _stakes;
    mapping(address => Participant) private _participants;
    mapping(uint256 => Round) private _rounds;
    uint256 private _eligibleNext; // wallets whose `next` stake >= minStake

    /// @notice The latest round number (0 before the first openRound).
    uint256 public currentRound;
    /// @notice Rounds finalized so far (voided rounds do not count); the task is
    ///         complete when this reaches totalRounds.
    uint256 public finalizedRounds;
    /// @notice Block of the SettingsPublished event (0 until the settings are published).
    uint64 public settingsBlock;
    /// @notice Hash of the current global model and the round that produced it.
    bytes32 public globalModelHash;
    uint256 public globalModelRound;
    /// @notice Tokens available for future round rewards.
    uint256 public rewardPool;

    // ----------------------------------------------------------------- events

    event Registered(address indexed wallet, bytes peerId, bytes32 boxPublicKey);
    event MultiaddrsUpdated(address indexed wallet);
    event Staked(address indexed wallet, uint256 amount);
    event UnstakeRequested(address indexed wallet, uint256 amount);
    event Withdrawn(address indexed wallet, uint256 amount);
    event RewardsClaimed(address indexed wallet, uint256 amount);
    event RewardsFunded(address indexed from, uint256 amount);
    event RoundOpened(uint256 indexed round, uint64 seedBlock);
    event RolesElected(uint256 indexed round, bytes32 seed, address[] proposers, address[] voters);
    event UpdateSubmitted(
        uint256 indexed round, address indexed proposer, bytes32 updateHash, bytes32 blobId, uint64 size
    );
    event VoteCommitted(uint256 indexed round, address indexed voter);
    event VoteRevealed(uint256 indexed round, address indexed voter, bytes32 aggregateHash);
    event RoundFinalized(uint256 indexed round, bool accepted, bytes32 winningHash, bytes32 globalModelHash);
    event RoundVoided(uint256 indexed round, string reason);
    event SettingsPublished(bytes settings);
    event Rewarded(uint256 indexed round, address indexed wallet, uint256 amount);
    event Slashed(uint256 indexed round, address indexed wallet, uint256 amount, string reason);
    event Evicted(address indexed wallet, address indexed by, uint256 refunded);
    event ModelRolledBack(uint256 indexed round, uint256 fromRound, uint256 toRound, bytes32 globalModelHash);

    // ----------------------------------------------------------------- errors

    error NotRegistered(address wallet);
    error AlreadyRegistered(address wallet);
    error TaskFull();
    error BadPeerId();
    error BadBoxKey();
    error BadPeerSig();
    error BadMultiaddrs();
    error ZeroAmount();
    error AmountTooLarge(uint256 amount);
    error InsufficientStake(uint256 have, uint256 want);
    error StillElected(uint256 round);
    error NothingToWithdraw();
    error NotEnoughEligible(uint256 have, uint256 want);
    error RoundStillOpen(uint256 round);
    error NoSuchRound(uint256 round);
    error WrongPhase(uint256 round, uint8 have, uint8 want);
    error SeedNotReady(uint256 round, uint256 readyAtBlock);
    error NotElectedProposer(uint256 round, address wallet);
    error NotElectedVoter(uint256 round, address wallet);
    error AlreadySubmitted(uint256 round, address wallet);
    error AlreadyCommitted(uint256 round, address wallet);
    error AlreadyRevealed(uint256 round, address wallet);
    error NotCommitted(uint256 round, address wallet);
    error CommitmentMismatch(uint256 round, address wallet);
    error AlreadyElected(uint256 round);
    error AlreadyFinalized(uint256 round);
    error TaskComplete();
    error InvalidParams(string what);
    error TransferFailed();
    error SettingsMismatch();
    error SettingsAlreadyPublished();
    error ModelUnderChallenge(uint256 round);

    // ------------------------------------------------------------ constructor

    constructor(TaskParams memory p) {
        if (p.token == address(0) || p.token.code.length == 0) revert InvalidParams("token");
        if (p.modelSpecHash == bytes32(0)) revert InvalidParams("modelSpecHash");
        if (p.configHash == bytes32(0)) revert InvalidParams("configHash");
        if (p.initialModelHash == bytes32(0)) revert InvalidParams("initialModelHash");
        if (p.totalRounds == 0) revert InvalidParams("totalRounds");
        if (p.proposersPerRound == 0 || p.proposersPerRound > MAX_SEATS) revert InvalidParams("proposersPerRound");
        if (p.votersPerRound == 0 || p.votersPerRound > MAX_SEATS) revert InvalidParams("votersPerRound");
        if (
            p.maxParticipants > MAX_PARTICIPANTS
                || uint256(p.maxParticipants) < uint256(p.proposersPerRound) + p.votersPerRound
        ) revert InvalidParams("maxParticipants");
        if (p.minStake == 0 || p.minStake > type(uint112).max) revert InvalidParams("minStake");
        if (p.trainSeconds == 0) revert InvalidParams("trainSeconds");
        if (p.commitSeconds == 0) revert InvalidParams("commitSeconds");
        if (p.revealSeconds == 0) revert InvalidParams("revealSeconds");
        if (p.quorumBps <= BPS / 2 || p.quorumBps > BPS) revert InvalidParams("quorumBps");
        if (p.slashBps > BPS) revert InvalidParams("slashBps");
        if (p.idleSlashBps > BPS) revert InvalidParams("idleSlashBps");
        if (p.proposerShareBps > BPS) revert InvalidParams("proposerShareBps");
        if (p.seedDelay > MAX_SEED_DELAY) revert InvalidParams("seedDelay");
        _params = p;
        globalModelHash = p.initialModelHash;
    }

    // ----------------------------------------------------------- participants

    function register(bytes calldata peerId, bytes32 boxPublicKey, string[] calldata multiaddrs, bytes calldata peerSig)
        external
    {
        Participant storage p = _participants[msg.sender];
        if (p.registered) revert AlreadyRegistered(msg.sender);
        if (peerId.length == 0 || peerId.length > MAX_PEER_ID_BYTES) revert BadPeerId();
        if (_lowOrder(boxPublicKey)) revert BadBoxKey();
        if (peerSig.length != PEER_SIG_BYTES) revert BadPeerSig();
        uint256 index = _registry.length;
        if (index < _params.maxParticipants) {
            _registry.push(msg.sender);
            _stakes.push();
        } else {
            index = _evictOne(); // the newcomer takes the evicted one's place in the order
            _registry[index] = msg.sender;
        }
        p.registered = true;
        p.index = uint64(index);
        p.joinedAt = uint32(block.timestamp);
        p.peerId = peerId;
        p.boxPublicKey = boxPublicKey;
        p.peerSig = peerSig;
        _storeMultiaddrs(p, multiaddrs);
        emit Registered(msg.sender, peerId, boxPublicKey);
    }

    function updateMultiaddrs(string[] calldata multiaddrs) external {
        Participant storage p = _registered(msg.sender);
        _storeMultiaddrs(p, multiaddrs);
        emit MultiaddrsUpdated(msg.sender);
    }

    /// @notice Adds `amount` (pulled with transferFrom) to the caller's active
    ///         stake; it counts from the next openRound.
    function stake(uint256 amount) external {
        Participant storage p = _registered(msg.sender);
        if (amount == 0) revert ZeroAmount();
        _pull(msg.sender, amount);
        _setNextStake(p.index, uint256(_stakes[p.index].next) + amount);
        emit Staked(msg.sender, amount);
    }

    /// @notice Moves `amount` from the active stake to the pending unstake; it
    ///         leaves the stake counted from the next openRound.
    function requestUnstake(uint256 amount) external {
        Participant storage p = _registered(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint256 have = _stakes[p.index].next;
        if (amount > have) revert InsufficientStake(have, amount);
        _setNextStake(p.index, have - amount);
        p.pendingUnstake += amount;
        p.unstakeRound = uint64(currentRound);
        emit UnstakeRequested(msg.sender, amount);
    }

    /// @notice Pays the pending unstake. Reverts while the caller is elected in a
    ///         round that is not finalized, while it won the vote that adopted the
    ///         current model and no later round is finalized (the model can still be
    ///         found unservable), and while the current round's roles are not drawn
    ///         yet if the unstake was requested during that round.
    function withdraw() external {
        Participant storage p = _registered(msg.sender);
        uint256 amount = p.pendingUnstake;
        if (amount == 0) revert NothingToWithdraw();
        uint256 elected = p.lastElectedRound;
        if (elected != 0 && _rounds[elected].status != ST_FINALIZED) revert StillElected(elected);
        if (_underChallenge(p)) revert ModelUnderChallenge(elected);
        uint256 c = currentRound;
        if (c != 0 && p.unstakeRound == c && _phase(c) == Phase.Seeding) revert RoundStillOpen(c);
        p.pendingUnstake = 0;
        _push(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
    }

    function claimRewards() external {
        Participant storage p = _participants[msg.sender];
        uint256 amount = p.rewards;
        if (amount == 0) revert NothingToWithdraw();
        p.rewards = 0;
        _push(msg.sender, amount);
        emit RewardsClaimed(msg.sender, amount);
    }

    function fundRewards(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        _pull(msg.sender, amount);
        rewardPool += amount;
        emit RewardsFunded(msg.sender, amount);
    }

    // ----------------------------------------------------------------- rounds

    /// @notice Opens the next round. Finalizes the current round first if that is
    ///         due, or voids it if its seed block expired before roles were drawn.
    /// @return round The new round, or 0 when this call closed the previous round
    ///         but could not open another (task complete or too few eligible).
    function openRound() external returns (uint256 round) {
        uint256 c = currentRound;
        bool closed;
        if (c != 0) {
            Round storage rd = _rounds[c];
            uint8 st = rd.status;
            if (st == ST_OPEN) {
                if (!_seedExpired(rd)) revert RoundStillOpen(c);
                _void(c, rd);
                closed = true;
            } else if (st == ST_ELECTED) {
                if (_electedPhase(rd) != Phase.Finalizable) revert RoundStillOpen(c);
                _finalize(c, rd);
                closed = true;
            }
        }
        if (finalizedRounds >= _params.totalRounds) {
            if (closed) return 0;
            revert TaskComplete();
        }
        uint256 want = uint256(_params.proposersPerRound) + _params.votersPerRound;
        uint256 have = _eligibleNext;
        if (have < want) {
            if (closed) return 0;
            revert NotEnoughEligible(have, want);
        }
        return _open(c + 1);
    }

    /// @notice Draws the round's roles from the seed (docs/protocol.md, step 2). If the
    ///         seed block is older than 256 blocks, voids the round and opens the
    ///         next one instead (when the task can continue).
    function electRoles(uint256 round) external {
        Round storage rd = _currentRound(round);
        uint8 st = rd.status;
        if (st == ST_ELECTED || st == ST_FINALIZED) revert AlreadyElected(round);
        if (st == ST_VOIDED) revert WrongPhase(round, uint8(Phase.Voided), uint8(Phase.Seeding));
        uint256 seedBlock = rd.seedBlock;
        if (block.number < seedBlock + SEED_CONFIRMATIONS) {
            revert SeedNotReady(round, seedBlock + SEED_CONFIRMATIONS);
        }
        if (_seedExpired(rd)) {
            _void(round, rd);
            if (
                finalizedRounds < _params.totalRounds
                    && _eligibleNext >= uint256(_params.proposersPerRound) + _params.votersPerRound
            ) _open(round + 1);
            return;
        }
        bytes32 seed =
            keccak256(abi.encode(blockhash(seedBlock), block.prevrandao, block.chainid, address(this), round));
        uint256 nP = _params.proposersPerRound;
        uint256 nV = _params.votersPerRound;
        (uint256[] memory indices, uint256[] memory stakes) = _snapshot(round);
        uint256[] memory picks = _draw(seed, stakes, nP + nV);
        address[] memory proposers = new address[](nP);
        address[] memory voters = new address[](nV);
        for (uint256 i; i < picks.length; ++i) {
            address wallet = _registry[indices[picks[i]]];
            rd.seats.push(wallet);
            Participant storage p = _participants[wallet];
            p.lastElectedRound = uint64(round);
            p.lastSeat = uint16(i);
            if (i < nP) proposers[i] = wallet;
            else voters[i - nP] = wallet;
        }
        uint64 nowTs = uint64(block.timestamp);
        rd.seed = seed;
        rd.electedAt = nowTs;
        _setDeadlines(rd, nowTs + _params.trainSeconds);
        rd.status = ST_ELECTED;
        emit RolesElected(round, seed, proposers, voters);
    }

    function submitUpdate(uint256 round, bytes32 updateHash, bytes32 blobId, uint64 size) external {
        Round storage rd = _roundInPhase(round, Phase.Train);
        Participant storage p = _participants[msg.sender];
        uint256 seat = p.lastSeat;
        uint256 nP = _params.proposersPerRound;
        if (p.lastElectedRound != round || seat >= nP) revert NotElectedProposer(round, msg.sender);
        Update storage u = rd.updates[seat];
        if (u.submitted) revert AlreadySubmitted(round, msg.sender);
        u.submitted = true;
        u.size = size;
        u.updateHash = updateHash;
        u.blobId = blobId;
        uint16 n = rd.submittedCount + 1;
        rd.submittedCount = n;
        if (n == nP) _setDeadlines(rd, uint64(block.timestamp)); // every proposer acted: train ends now
        emit UpdateSubmitted(round, msg.sender, updateHash, blobId, size);
    }

    function commitVote(uint256 round, bytes32 commitment) external {
        Round storage rd = _roundInPhase(round, Phase.Commit);
        Vote storage v = rd.votes[_voterSeat(round)];
        if (v.committed) revert AlreadyCommitted(round, msg.sender);
        v.committed = true;
        v.commitment = commitment;
        uint16 n = rd.committedCount + 1;
        rd.committedCount = n;
        if (n == _params.votersPerRound) {
            // every voter acted: commit ends now
            uint64 nowTs = uint64(block.timestamp);
            rd.commitEnd = nowTs;
            rd.revealEnd = nowTs + _params.revealSeconds;
        }
        emit VoteCommitted(round, msg.sender);
    }

    function revealVote(
        uint256 round,
        bytes32 aggregateHash,
        uint256 includedBits,
        uint256 rejectedBits,
        uint256 flagBits,
        int64 score,
        bytes32 salt
    ) external {
        Round storage rd = _roundInPhase(round, Phase.Reveal);
        Vote storage v = rd.votes[_voterSeat(round)];
        if (!v.committed) revert NotCommitted(round, msg.sender);
        if (v.revealed) revert AlreadyRevealed(round, msg.sender);
        bytes32 expected =
            _commitment(round, msg.sender, aggregateHash, includedBits, rejectedBits, flagBits, score, salt);
        if (expected != v.commitment) revert CommitmentMismatch(round, msg.sender);
        v.revealed = true;
        v.score = score;
        v.aggregateHash = aggregateHash;
        v.includedBits = includedBits;
        v.rejectedBits = rejectedBits;
        v.flagBits = flagBits;
        uint16 n = rd.revealedCount + 1;
        rd.revealedCount = n;
        if (n == rd.committedCount) rd.revealEnd = uint64(block.timestamp); // every committed voter revealed
        emit VoteRevealed(round, msg.sender, aggregateHash);
    }

    /// @notice Settles a round after its reveal phase: the winning aggregate, the
    ///         model update, rewards and slashes. Never reverts for lack of reveals
    ///         or an empty reward pool.
    function finalizeRound(uint256 round) external {
        if (round == 0 || round > currentRound) revert NoSuchRound(round);
        Round storage rd = _rounds[round];
        if (rd.status == ST_FINALIZED) revert AlreadyFinalized(round);
        Phase ph = _phase(round);
        if (ph != Phase.Finalizable) revert WrongPhase(round, uint8(ph), uint8(Phase.Finalizable));
        _finalize(round, rd);
    }

    // ------------------------------------------------------------------ views

    /// @notice Publishes the task's canonical settings JSON, whose sha256 must be the
    ///         configHash, so nodes can read them from the chain and name any setting
    ///         they disagree on. Anyone may publish (the hash decides), once.
    function publishSettings(bytes calldata settings) external {
        if (settingsBlock != 0) revert SettingsAlreadyPublished();
        if (sha256(settings) != _params.configHash) revert SettingsMismatch();
        settingsBlock = uint64(block.number);
        emit SettingsPublished(settings);
    }

    function taskParams() external view returns (TaskParams memory) {
        return _params;
    }

    function participantCount() external view returns (uint256) {
        return _registry.length;
    }

    /// @notice Wallets whose active stake reaches minStake: what the next
    ///         openRound counts (it needs proposers + voters of them).
    function eligibleCount() external view returns (uint256) {
        return _eligibleNext;
    }

    function participants(uint256 offset, uint256 limit) external view returns (ParticipantView[] memory out) {
        uint256 n = _registry.length;
        if (offset >= n) return new ParticipantView[](0);
        uint256 end = n - offset < limit ? n : offset + limit;
        out = new ParticipantView[](end - offset);
        for (uint256 i = offset; i < end; ++i) {
            out[i - offset] = _participantView(_registry[i]);
        }
    }

    function participant(address wallet) external view returns (ParticipantView memory) {
        if (!_participants[wallet].registered) revert NotRegistered(wallet);
        return _participantView(wallet);
    }

    function isEligible(address wallet) external view returns (bool) {
        Participant storage p = _participants[wallet];
        return p.registered && _stakes[p.index].next >= _params.minStake;
    }

    function phase(uint256 round) external view returns (Phase) {
        if (round == 0 || round > currentRound) return Phase.None;
        return _phase(round);
    }

    /// @notice The whole state of one round. `eligible`/`eligibleStakes` (the
    ///         snapshot the draw uses) are given for the current round only: later
    ///         stake changes overwrite what older rounds counted.
    function getRound(uint256 round) external view returns (RoundView memory v) {
        if (round == 0 || round > currentRound) revert NoSuchRound(round);
        Round storage rd = _rounds[round];
        uint256 nP = _params.proposersPerRound;
        uint256 nV = _params.votersPerRound;
        v.round = round;
        v.phase = _phase(round);
        v.seedBlock = rd.seedBlock;
        v.seed = rd.seed;
        v.electedAt = rd.electedAt;
        v.trainEnd = rd.trainEnd;
        v.commitEnd = rd.commitEnd;
        v.revealEnd = rd.revealEnd;
        if (round == currentRound) {
            (uint256[] memory indices, uint256[] memory stakes) = _snapshot(round);
            v.eligible = new address[](indices.length);
            for (uint256 i; i < indices.length; ++i) {
                v.eligible[i] = _registry[indices[i]];
            }
            v.eligibleStakes = stakes;
        }
        uint256 seated = rd.seats.length;
        if (seated == nP + nV) {
            v.proposers = new address[](nP);
            v.voters = new address[](nV);
            v.updates = new UpdateView[](nP);
            v.votes = new VoteView[](nV);
            for (uint256 i; i < nP; ++i) {
                v.proposers[i] = rd.seats[i];
                Update storage u = rd.updates[i];
                v.updates[i] = UpdateView(u.submitted, u.updateHash, u.blobId, u.size);
            }
            for (uint256 j; j < nV; ++j) {
                v.voters[j] = rd.seats[nP + j];
                Vote storage w = rd.votes[j];
                v.votes[j] = VoteView(
                    w.committed,
                    w.revealed,
                    w.commitment,
                    w.aggregateHash,
                    w.includedBits,
                    w.rejectedBits,
                    w.flagBits,
                    w.score
                );
            }
        }
        v.finalized = rd.status == ST_FINALIZED;
        v.accepted = rd.accepted;
        v.winningHash = rd.winningHash;
        v.winningIncludedBits = rd.winningIncludedBits;
        v.globalModelHashAfter = rd.globalModelHashAfter;
    }

    function voteCommitment(
        uint256 round,
        address voter,
        bytes32 aggregateHash,
        uint256 includedBits,
        uint256 rejectedBits,
        uint256 flagBits,
        int64 score,
        bytes32 salt
    ) external view returns (bytes32) {
        return _commitment(round, voter, aggregateHash, includedBits, rejectedBits, flagBits, score, salt);
    }

    /// @notice The draw of docs/protocol.md, step 2, on given inputs: positions into
    ///         `stakes` in seat order. electRoles runs exactly this on the
    ///         eligibility snapshot; exposed so off-chain mirrors can be checked.
    function drawSeats(bytes32 seed, uint256[] calldata stakes, uint256 seats)
        external
        pure
        returns (uint256[] memory)
    {
        return _draw(seed, stakes, seats);
    }

    // --------------------------------------------------------------- internal

    function _registered(address wallet) private view returns (Participant storage p) {
        p = _participants[wallet];
        if (!p.registered) revert NotRegistered(wallet);
    }

    /// @dev True for the low-order X25519 points: a key wrap sealed to one fails.
    function _lowOrder(bytes32 key) private pure returns (bool) {
        bytes32 k = key & ~bytes32(uint256(0x80)); // X25519 ignores the top bit
        return k == LOW_ORDER_0 || k == LOW_ORDER_1 || k == LOW_ORDER_2 || k == LOW_ORDER_3 || k == LOW_ORDER_4
            || k == LOW_ORDER_5 || k == LOW_ORDER_6;
    }

    /// @dev Frees the first registration (in registration order) that holds no
    ///      stake counted now or from the next round (both below minStake), has
    ///      had EVICTION_GRACE seconds to stake, and is not locked by a round
    ///      (elected in an unfinalized one, or under challenge for the current
    ///      model). Its remaining stake and pending unstake become claimable
    ///      rewards (claimRewards needs no registration), so no token is lost.
    ///      Returns the freed position; reverts TaskFull when there is none.
    function _evictOne() private returns (uint256) {
        uint256 n = _registry.length;
        uint256 minStake = _params.minStake;
        uint256 c = currentRound;
        for (uint256 i; i < n; ++i) {
            StakeEntry memory e = _stakes[i];
            if (e.next >= minStake || _stakeAt(e, c) >= minStake) continue;
            address wallet = _registry[i];
            Participant storage q = _participants[wallet];
            if (block.timestamp < uint256(q.joinedAt) + EVICTION_GRACE) continue;
            uint256 elected = q.lastElectedRound;
            if (elected != 0 && _rounds[elected].status != ST_FINALIZED) continue;
            if (_underChallenge(q)) continue;
            uint256 refund = uint256(e.next) + q.pendingUnstake;
            q.registered = false;
            q.pendingUnstake = 0;
            q.rewards += refund;
            delete _stakes[i];
            emit Evicted(wallet, msg.sender, refund);
            return i;
        }
        revert TaskFull();
    }

    /// @dev The wallet won the vote of the round that adopted the current model,
    ///      and no later round is finalized yet: the next round's voters can still
    ///      find that model unservable and have the winners slashed.
    function _underChallenge(Participant storage p) private view returns (bool) {
        uint256 a = p.lastElectedRound;
        if (a == 0 || a != globalModelRound) return false;
        Round storage rd = _rounds[a];
        uint256 nP = _params.proposersPerRound;
        uint256 seat = p.lastSeat;
        if (seat < nP || (uint256(rd.winnerSeats) >> (seat - nP)) & 1 == 0) return false;
        if (finalizedRounds >= _params.totalRounds) return false; // no round left to challenge
        for (uint256 r = a + 1; r <= currentRound; ++r) {
            if (_rounds[r].status == ST_FINALIZED) return false;
        }
        return true;
    }

    function _storeMultiaddrs(Participant storage p, string[] calldata multiaddrs) private {
        uint256 n = multiaddrs.length;
        if (n == 0 || n > MAX_MULTIADDRS) revert BadMultiaddrs();
        delete p.multiaddrs;
        for (uint256 i; i < n; ++i) {
            uint256 len = bytes(multiaddrs[i]).length;
            if (len == 0 || len > MAX_MULTIADDR_BYTES) revert BadMultiaddrs();
            p.multiaddrs.push(multiaddrs[i]);
        }
    }

    /// @dev Sets the stake counted from the next round (currentRound + 1).
    function _setNextStake(uint256 index, uint256 newNext) private {
        if (newNext > type(uint112).max) revert AmountTooLarge(newNext);
        StakeEntry storage s = _stakes[index];
        StakeEntry memory e = s;
        uint256 c = currentRound;
        uint256 oldNext = e.next;
        if (e.changeRound <= c) e.prior = e.next; // the old `next` is what round c counts
        e.next = uint112(newNext);
        e.changeRound = uint32(c + 1);
        _stakes[index] = e;
        uint256 minStake = _params.minStake;
        bool was = oldNext >= minStake;
        bool isNow = newNext >= minStake;
        if (was != isNow) {
            if (isNow) ++_eligibleNext;
            else --_eligibleNext;
        }
    }

    function _stakeAt(StakeEntry memory e, uint256 round) private pure returns (uint256) {
        return round >= e.changeRound ? e.next : e.prior;
    }

    /// @dev Eligible participants of `round` in registration order with the stake
    ///      they count in that round. Exact while `round` is the current round.
    ///      One SLOAD per participant: the loop reads the packed StakeEntry words
    ///      directly (prior: bits 0-111, next: 112-223, changeRound: 224-255).
    function _snapshot(uint256 round) private view returns (uint256[] memory indices, uint256[] memory stakes) {
        uint256 n = _stakes.length;
        uint256 minStake = _params.minStake;
        indices = new uint256[](n);
        stakes = new uint256[](n);
        uint256 k;
        assembly ("memory-safe") {
            mstore(0, _stakes.slot)
            let first := keccak256(0, 32)
            let mask := 0xffffffffffffffffffffffffffff // 112 bits
            let idx := add(indices, 32)
            let stk := add(stakes, 32)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let word := sload(add(first, i))
                let s := and(word, mask)
                if iszero(lt(round, shr(224, word))) { s := and(shr(112, word), mask) }
                if iszero(lt(s, minStake)) {
                    mstore(add(idx, mul(k, 32)), i)
                    mstore(add(stk, mul(k, 32)), s)
                    k := add(k, 1)
                }
            }
            mstore(indices, k)
            mstore(stakes, k)
        }
    }

    /// @dev The seat draw: for seat i, x = keccak256(seed, i) mod W (W = remaining
    ///      stake); the first remaining entry whose running stake sum exceeds x is
    ///      taken and removed (the rest keep their order).
    ///      Same result as that linear walk, found faster: entries sit in blocks
    ///      of DRAW_BLOCK with block sums; a seat walks the block sums to the first
    ///      block whose running sum exceeds x, then that block's entries. Removal
    ///      zeroes the entry (a zero entry never makes the running sum exceed x)
    ///      and lowers its block sum. Both walks always run to their end, so the
    ///      gas does not depend on the seed: eth_estimateGas, run in another block
    ///      with another prevrandao, gives what the transaction uses.
    function _draw(bytes32 seed, uint256[] memory stakes, uint256 seats) private pure returns (uint256[] memory picks) {
        uint256 n = stakes.length;
        if (seats > n) revert NotEnoughEligible(n, seats);
        uint256 blocks = (n + DRAW_BLOCK - 1) / DRAW_BLOCK;
        uint256[] memory entries = new uint256[](blocks * DRAW_BLOCK); // zero padded
        uint256[] memory sums = new uint256[](blocks);
        uint256 total;
        for (uint256 i; i < n; ++i) {
            uint256 s = stakes[i];
            total += s; // checked: a total above 2^256-1 reverts
            unchecked {
                entries[i] = s;
                sums[i / DRAW_BLOCK] += s;
            }
        }
        picks = new uint256[](seats);
        for (uint256 seat; seat < seats; ++seat) {
            if (total == 0) revert NotEnoughEligible(seat, seats);
            uint256 x = uint256(keccak256(abi.encode(seed, seat))) % total;
            uint256 pos;
            assembly ("memory-safe") {
                // blocks: the first whose running sum exceeds x (x < total)
                let first := add(sums, 32)
                let last := add(first, shl(5, blocks))
                let hit := last
                let before := 0
                let running := 0
                for { let p := first } lt(p, last) { p := add(p, 32) } {
                    let next := add(running, mload(p))
                    if and(gt(next, x), eq(hit, last)) {
                        hit := p
                        before := running
                    }
                    running := next
                }
                // entries of that block, running on from the blocks before it
                let base := add(entries, 32)
                let from := add(base, mul(shr(5, sub(hit, first)), mul(DRAW_BLOCK, 32)))
                let to := add(from, mul(DRAW_BLOCK, 32))
                let found := to
                running := before
                for { let p := from } lt(p, to) { p := add(p, 32) } {
                    running := add(running, mload(p))
                    if and(gt(running, x), eq(found, to)) { found := p }
                }
                pos := shr(5, sub(found, base))
            }
            unchecked {
                uint256 s = entries[pos];
                picks[seat] = pos;
                total -= s;
                entries[pos] = 0;
                sums[pos / DRAW_BLOCK] -= s;
            }
        }
    }

    function _commitment(
        uint256 round,
        address voter,
        bytes32 aggregateHash,
        uint256 includedBits,
        uint256 rejectedBits,
        uint256 flagBits,
        int64 score,
        bytes32 salt
    ) private view returns (bytes32) {
        return keccak256(
            abi.encode(
                block.chainid,
                address(this),
                round,
                voter,
                aggregateHash,
                includedBits,
                rejectedBits,
                flagBits,
                score,
                salt
            )
        );
    }

    function _open(uint256 round) private returns (uint256) {
        Round storage rd = _rounds[round];
        uint64 seedBlock = uint64(block.number + _params.seedDelay);
        rd.seedBlock = seedBlock;
        rd.status = ST_OPEN;
        currentRound = round;
        emit RoundOpened(round, seedBlock);
        return round;
    }

    function _void(uint256 round, Round storage rd) private {
        rd.status = ST_VOIDED;
        emit RoundVoided(round, "seed block expired before roles were elected");
    }

    function _seedExpired(Round storage rd) private view returns (bool) {
        return block.number > uint256(rd.seedBlock) + BLOCKHASH_WINDOW;
    }

    /// @dev Train ends at `trainEnd`; commit and reveal follow at full length.
    function _setDeadlines(Round storage rd, uint64 trainEnd) private {
        uint64 commitEnd = trainEnd + _params.commitSeconds;
        rd.trainEnd = trainEnd;
        rd.commitEnd = commitEnd;
        rd.revealEnd = commitEnd + _params.revealSeconds;
    }

    function _currentRound(uint256 round) private view returns (Round storage) {
        if (round == 0 || round > currentRound) revert NoSuchRound(round);
        return _rounds[round];
    }

    function _roundInPhase(uint256 round, Phase want) private view returns (Round storage rd) {
        rd = _currentRound(round);
        Phase have = _phase(round);
        if (have != want) revert WrongPhase(round, uint8(have), uint8(want));
    }

    function _voterSeat(uint256 round) private view returns (uint256) {
        Participant storage p = _participants[msg.sender];
        uint256 seat = p.lastSeat;
        uint256 nP = _params.proposersPerRound;
        if (p.lastElectedRound != round || seat < nP) revert NotElectedVoter(round, msg.sender);
        return seat - nP;
    }

    function _phase(uint256 round) private view returns (Phase) {
        Round storage rd = _rounds[round];
        uint8 st = rd.status;
        if (st == ST_FINALIZED) return Phase.Finalized;
        if (st == ST_VOIDED) return Phase.Voided;
        if (st == ST_OPEN) return _seedExpired(rd) ? Phase.Voided : Phase.Seeding;
        if (st == ST_ELECTED) return _electedPhase(rd);
        return Phase.None;
    }

    function _electedPhase(Round storage rd) private view returns (Phase) {
        uint256 t = block.timestamp;
        if (t < rd.trainEnd) return Phase.Train;
        if (t < rd.commitEnd) return Phase.Commit;
        if (t < rd.revealEnd && rd.revealedCount < rd.committedCount) return Phase.Reveal;
        return Phase.Finalizable;
    }

    function _participantView(address wallet) private view returns (ParticipantView memory v) {
        Participant storage p = _participants[wallet];
        v.wallet = wallet;
        v.peerId = p.peerId;
        v.boxPublicKey = p.boxPublicKey;
        v.multiaddrs = p.multiaddrs;
        v.peerSig = p.peerSig;
        v.stake = _stakes[p.index].next;
        v.pendingUnstake = p.pendingUnstake;
        v.rewards = p.rewards;
        v.slashed = p.slashed;
        v.registeredAt = p.index;
        v.lastElectedRound = p.lastElectedRound;
    }

    // ------------------------------------------------------------- settlement

    /// @dev Outcome of the vote count, kept in memory during _finalize.
    struct Outcome {
        bool hasWinner;
        bool accepted;
        bool unavailable; // the winners said the base model could not be obtained
        uint256 winCount;
        bytes32 winHash;
        uint256 winInc;
        uint256 winRej;
        bool[] isWinner; // by voter seat
    }

    function _finalize(uint256 round, Round storage rd) private {
        uint256 nP = _params.proposersPerRound;
        uint256 nV = _params.votersPerRound;
        Vote[] memory votes = new Vote[](nV);
        for (uint256 j; j < nV; ++j) {
            votes[j] = rd.votes[j];
        }
        Outcome memory o = _count(votes, nV);
        uint256 from = globalModelRound;
        bool rollBack = o.unavailable && from != 0; // the initial model is never unservable

        uint256 pool = rewardPool;
        uint256 reward = _params.rewardPerRound;
        if (reward > pool) reward = pool;
        uint256 proposerShare = reward * _params.proposerShareBps / BPS;
        pool -= _payVoters(round, rd, o, nP, reward - proposerShare);
        if (o.accepted) pool -= _payProposers(round, rd, o, votes, nP, proposerShare);
        pool += _slashAll(round, rd, o, votes, nP, nV, rollBack);
        if (rollBack) pool += _rollBack(round, from);
        rewardPool = pool;

        rd.status = ST_FINALIZED;
        rd.accepted = o.accepted;
        rd.winningHash = o.winHash;
        rd.winningIncludedBits = o.winInc;
        uint256 winners;
        for (uint256 j; j < nV; ++j) {
            if (o.isWinner[j]) winners |= 1 << j;
        }
        rd.winnerSeats = uint64(winners);
        if (o.accepted) {
            rd.baseRound = uint64(globalModelRound);
            globalModelHash = o.winHash;
            globalModelRound = round;
        }
        bytes32 after_ = globalModelHash;
        rd.globalModelHashAfter = after_;
        ++finalizedRounds;
        emit RoundFinalized(round, o.accepted, o.winHash, after_);
    }

    /// @dev One vote per seat. Votes agree when aggregateHash, includedBits and
    ///      rejectedBits are all equal; a group wins iff
    ///      agreeing * 10000 >= quorumBps * electedVoterSeats (at most one can, as
    ///      quorum > 50%). Accepted iff at least half of its scores are >= 0 (the
    ///      upper median is >= 0: one winner of two cannot veto) and the winners'
    ///      answer is not "base model unavailable" (all zero hash and bitmaps).
    function _count(Vote[] memory votes, uint256 nV) private view returns (Outcome memory o) {
        o.isWinner = new bool[](nV);
        uint256 need = uint256(_params.quorumBps) * nV;
        for (uint256 j; j < nV; ++j) {
            Vote memory a = votes[j];
            if (!a.revealed) continue;
            uint256 agreeing;
            for (uint256 k; k < nV; ++k) {
                if (_sameAnswer(a, votes[k])) ++agreeing;
            }
            if (agreeing * BPS >= need) {
                o.hasWinner = true;
                o.winCount = agreeing;
                o.winHash = a.aggregateHash;
                o.winInc = a.includedBits;
                o.winRej = a.rejectedBits;
                break;
            }
        }
        if (!o.hasWinner) return o;
        uint256 nonNegative;
        for (uint256 k; k < nV; ++k) {
            if (_sameAnswer(votes[k], o.winHash, o.winInc, o.winRej)) {
                o.isWinner[k] = true;
                if (votes[k].score >= 0) ++nonNegative;
            }
        }
        o.unavailable = o.winHash == bytes32(0) && o.winInc == 0 && o.winRej == 0;
        o.accepted = !o.unavailable && nonNegative * 2 >= o.winCount;
    }

    /// @dev "Base model unavailable": a voter that could not obtain the global model
    ///      by its commit cutoff votes an all-zero aggregate hash and bitmaps.
    function _isUnavailable(Vote memory v) private pure returns (bool) {
        return v.aggregateHash == bytes32(0) && v.includedBits == 0 && v.rejectedBits == 0;
    }

    /// @dev The winners found the current model unservable: it goes back one step
    ///      (to the model its round replaced) and the winners of the round that
    ///      adopted it are slashed on the stake they counted in that round (the
    ///      Slashed events name `round`, the round being finalized).
    ///      Returns the tokens taken.
    function _rollBack(uint256 round, uint256 from) private returns (uint256 taken) {
        Round storage bad = _rounds[from];
        uint256 nP = _params.proposersPerRound;
        uint256 full = _params.slashBps;
        uint256 winners = bad.winnerSeats;
        for (uint256 j; winners != 0; ++j) {
            if (winners & 1 != 0) taken += _slashAt(round, from, bad.seats[nP + j], full, "unservable model");
            winners >>= 1;
        }
        uint256 to = bad.baseRound;
        bytes32 h = to == 0 ? _params.initialModelHash : _rounds[to].winningHash;
        globalModelHash = h;
        globalModelRound = to;
        emit ModelRolledBack(round, from, to, h);
    }

    function _sameAnswer(Vote memory a, Vote memory b) private pure returns (bool) {
        return b.revealed && a.aggregateHash == b.aggregateHash && a.includedBits == b.includedBits
            && a.rejectedBits == b.rejectedBits;
    }

    function _sameAnswer(Vote memory a, bytes32 h, uint256 inc, uint256 rej) private pure returns (bool) {
        return a.revealed && a.aggregateHash == h && a.includedBits == inc && a.rejectedBits == rej;
    }

    /// @dev The voter share, equally per winning seat. Returns what was paid.
    function _payVoters(uint256 round, Round storage rd, Outcome memory o, uint256 nP, uint256 share)
        private
        returns (uint256 paid)
    {
        if (!o.hasWinner || share == 0) return 0;
        uint256 each = share / o.winCount;
        if (each == 0) return 0;
        for (uint256 j; j < o.isWinner.length; ++j) {
            if (o.isWinner[j]) _credit(round, rd.seats[nP + j], each);
        }
        return each * o.winCount;
    }

    /// @dev The proposer share, equally to proposers in the winners' includedBits,
    ///      not in their rejectedBits and not flagged by a quorum of winning seats.
    function _payProposers(
        uint256 round,
        Round storage rd,
        Outcome memory o,
        Vote[] memory votes,
        uint256 nP,
        uint256 share
    ) private returns (uint256 paid) {
        if (share == 0) return 0;
        bool[] memory deserving = new bool[](nP);
        uint256 count;
        uint256 flagNeed = uint256(_params.quorumBps) * o.winCount;
        for (uint256 i; i < nP; ++i) {
            uint256 bit = 1 << i;
            if (o.winInc & bit == 0 || o.winRej & bit != 0 || !rd.updates[i].submitted) continue;
            uint256 flags;
            for (uint256 j; j < votes.length; ++j) {
                if (o.isWinner[j] && votes[j].flagBits & bit != 0) ++flags;
            }
            if (flags * BPS >= flagNeed) continue;
            deserving[i] = true;
            ++count;
        }
        if (count == 0) return 0;
        uint256 each = share / count;
        if (each == 0) return 0;
        for (uint256 i; i < nP; ++i) {
            if (deserving[i]) _credit(round, rd.seats[i], each);
        }
        return each * count;
    }

    /// @dev Every slash of docs/protocol.md, step 8. Returns the tokens taken (they go
    ///      to the reward pool, after this round's rewards were paid).
    function _slashAll(
        uint256 round,
        Round storage rd,
        Outcome memory o,
        Vote[] memory votes,
        uint256 nP,
        uint256 nV,
        bool rollBack
    ) private returns (uint256 taken) {
        uint256 full = _params.slashBps;
        uint256 idle = _params.idleSlashBps;
        for (uint256 i; i < nP; ++i) {
            if (!rd.updates[i].submitted) {
                // without the base model nobody could train: not idle
                if (!rollBack) taken += _slash(round, rd.seats[i], idle, "idle: no update submitted");
            } else if (o.hasWinner && (o.winInc & o.winRej) & (1 << i) != 0) {
                taken += _slash(round, rd.seats[i], full, "update rejected by norm check");
            }
        }
        for (uint256 j; j < nV; ++j) {
            Vote memory v = votes[j];
            if (!v.committed) {
                taken += _slash(round, rd.seats[nP + j], idle, "idle: no vote committed");
            } else if (!v.revealed) {
                taken += _slash(round, rd.seats[nP + j], full, "vote committed but not revealed");
            } else if (
                o.hasWinner && !o.unavailable && !o.isWinner[j] && !_isUnavailable(v)
                    && v.includedBits == o.winInc && (v.aggregateHash != o.winHash || v.rejectedBits != o.winRej)
            ) {
                taken += _slash(round, rd.seats[nP + j], full, "different aggregate from the same inputs");
            }
        }
    }

    /// @dev Takes `bps` of the stake the wallet counted in `round`, from its active
    ///      stake first, then from its pending unstake.
    function _slash(uint256 round, address wallet, uint256 bps, string memory reason)
        private
        returns (uint256 amount)
    {
        return _slashAt(round, round, wallet, bps, reason);
    }

    /// @dev As _slash, on the stake counted in `stakeRound`; the event names `round`
    ///      (the round being finalized).
    function _slashAt(uint256 round, uint256 stakeRound, address wallet, uint256 bps, string memory reason)
        private
        returns (uint256 amount)
    {
        if (bps == 0) return 0;
        Participant storage p = _participants[wallet];
        if (!p.registered) return 0; // evicted: it held no stake worth taking
        uint256 index = p.index;
        StakeEntry memory e = _stakes[index];
        amount = _stakeAt(e, stakeRound) * bps / BPS;
        if (amount == 0) return 0;
        uint256 fromStake = amount < e.next ? amount : e.next;
        if (fromStake != 0) _setNextStake(index, e.next - fromStake);
        uint256 rest = amount - fromStake;
        if (rest != 0) {
            uint256 pending = p.pendingUnstake;
            if (rest > pending) rest = pending;
            p.pendingUnstake = pending - rest;
            amount = fromStake + rest;
        }
        p.slashed += amount;
        emit Slashed(round, wallet, amount, reason);
    }

    function _credit(uint256 round, address wallet, uint256 amount) private {
        _participants[wallet].rewards += amount;
        emit Rewarded(round, wallet, amount);
    }

    function _pull(address from, uint256 amount) private {
        _call(abi.encodeCall(IERC20Transfers.transferFrom, (from, address(this), amount)));
    }

    function _push(address to, uint256 amount) private {
        _call(abi.encodeCall(IERC20Transfers.transfer, (to, amount)));
    }

    function _call(bytes memory data) private {
        (bool ok, bytes memory ret) = _params.token.call(data);
        if (!ok || (ret.length != 0 && (ret.length != 32 || abi.decode(ret, (uint256)) != 1))) {
            revert TransferFailed();
        }
    }
}
