// SPDX-License-Identifier: EUPL-1.2
pragma solidity ^0.8.20;

/// @title Anchor: tree heads of govchain-edge gateways, on an Ethereum-compatible chain
/// @notice A gateway anchors the RFC 9162 tree head (the "root") of each epoch's
/// batches here. An auditor holding a root asks `anchoredAt(root)` for the block
/// that first recorded it, and reads the `Anchored` event in that block for the
/// epoch and the gateway's account. Anyone may anchor; what makes a root count is
/// the gateway account that sent it, which the auditor compares with the account
/// registered for that gateway.
/// @dev Compiled without PUSH0 and later opcodes (evmVersion "london"), so it
/// deploys on permissioned chains that have not taken up Shanghai.
contract Anchor {
    /// @notice Emitted once per root, by the transaction that anchored it first.
    /// @param root the 32-byte tree head
    /// @param epoch the gateway's epoch number for that tree head
    /// @param gateway the account that sent the transaction (the gateway's key)
    event Anchored(bytes32 indexed root, uint64 indexed epoch, address indexed gateway);

    /// @notice The root is all zeros: nothing real hashes to it, so it is refused.
    error ZeroRoot();

    // root => number of the block that first recorded it (0: never anchored)
    mapping(bytes32 => uint256) private firstBlock;

    /// @notice Records `root` for `epoch`, sent by the caller's account.
    /// Anchoring a root that is already here changes nothing and emits nothing:
    /// a gateway that sends the same root again after a restart does no harm,
    /// and the root keeps the block where it first appeared.
    function anchor(bytes32 root, uint64 epoch) external {
        if (root == bytes32(0)) revert ZeroRoot();
        if (firstBlock[root] != 0) return;
        firstBlock[root] = block.number;
        emit Anchored(root, epoch, msg.sender);
    }

    /// @notice The block that first recorded `root`, or 0 if it was never anchored.
    function anchoredAt(bytes32 root) external view returns (uint256 blockNumber) {
        return firstBlock[root];
    }
}
