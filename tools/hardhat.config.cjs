// Hardhat 2 as a devnet for `market devnet up --hardhat`: the same chain id, hardfork and gas
// limit as the Anvil devnet.
module.exports = {
  networks: {
    hardhat: { chainId: 31337, hardfork: "cancun", blockGasLimit: 60000000, initialBaseFeePerGas: 0 },
  },
};
