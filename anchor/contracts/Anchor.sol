// SPDX-License-Identifier: EUPL-1.2
pragma solidity ^0.8.20;

/// @title Anchor: tree heads of govchain-edge gateways, on an Ethereum-compatible chain
/// @notice A gateway anchors the RFC 9162 tree head (the "root") of each epoch's
/// batches here. Every account that anchors a root is recorded on its own: an
/// auditor holding a root and the gateway's registered account asks
/// `anchoredAt(root, account)` for the block where that account recorded it, and
/// reads the `Anchored` event in that block for the epoch. Anyone may anchor any
/// root; someone who copies a pending root from the mempool and anchors it first
/// adds a record of their own and neither blocks nor changes the gateway's.
/// @dev Compiled without PUSH0 and later opcodes (evmVersion "london"), so it
/// deploys on permissioned chains that have not taken up Shanghai.
contract Anchor {
    /// @notice Emitted once per root and account, by the transaction in which that account anchored it.
    /// @param root the 32-byte tree head
    /// @param epoch the gateway's epoch number for that tree head
    /// @param gateway the account that sent the transaction (the gateway's key)
    event Anchored(bytes32 indexed root, uint64 indexed epoch, address indexed gateway);

    /// @notice The root is all zeros: nothing real hashes to it, so it is refused.
    error ZeroRoot();

    // root => account => number of the block where that account recorded it (0: never)
    mapping(bytes32 => mapping(address => uint256)) private anchoredBlock;

    /// @notice Records `root` for `epoch`, sent by the caller's account.
    /// The same account anchoring the same root again changes nothing and emits nothing:
    /// a gateway that sends a root again after a restart does no harm, and its record
    /// keeps the block where it first appeared. Other accounts' records of the root do
    /// not count here: each account has its own.
    function anchor(bytes32 root, uint64 epoch) external {
        if (root == bytes32(0)) revert ZeroRoot();
        if (anchoredBlock[root][msg.sender] != 0) return;
        anchoredBlock[root][msg.sender] = block.number;
        emit Anchored(root, epoch, msg.sender);
    }

    /// @notice The block where `account` anchored `root`, or 0 if that account never did.
    function anchoredAt(bytes32 root, address account) external view returns (uint256 blockNumber) {
        return anchoredBlock[root][account];
    }
}
