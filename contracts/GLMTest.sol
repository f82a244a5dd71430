// SPDX-License-Identifier: GPL-3.0-only
// A GLM-like ERC-20 token for local test chains (anvil): 18 decimals, the
// name and symbol of the test GLM, and a public mint like the testnet faucet.
// Never deploy it where tokens have value.
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

contract GLMTest is ERC20 {
    constructor() ERC20("Test Golem Network Token", "tGLM") {}

    /// Mint `amount` (in wei, 18 decimals) to `to`; anyone may, it is a test token.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
