// Generates tests/vectors/merkle.json: payout-tree vectors from the reference implementation,
// OpenZeppelin's StandardMerkleTree (npm @openzeppelin/merkle-tree, pinned in package.json),
// for the leaf encoding ["address", "uint256"] that Marketplace.claim verifies.
// The Python tests (tests/valuation/) and the Solidity tests read the file; neither needs Node.
// Deterministic: no clock, no randomness; accounts and amounts are derived from keccak256 of
// fixed labels, so a rerun writes a byte-identical file.
//
//   cd tools/vectors && npm ci
//   node merkle-vectors.mjs            # write tests/vectors/merkle.json
//   node merkle-vectors.mjs --check    # exit 1 if the committed file is stale
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";
import { keccak256 } from "ethereum-cryptography/keccak.js";
import { bytesToHex, utf8ToBytes } from "ethereum-cryptography/utils.js";

const here = dirname(fileURLToPath(import.meta.url));
const outFile = resolve(here, "../../tests/vectors/merkle.json");
const check = process.argv.includes("--check");
const require = createRequire(import.meta.url);
const library = require("@openzeppelin/merkle-tree/package.json");

const LEAF_ENCODING = ["address", "uint256"];
const TWO_255 = 2n ** 255n;

const hashHex = (text) => bytesToHex(keccak256(utf8ToBytes(text)));

/** EIP-55 checksummed form of a 0x-prefixed hex address. */
function checksum(address) {
  const lower = address.slice(2).toLowerCase();
  const hash = hashHex(lower);
  let out = "0x";
  for (let i = 0; i < 40; i++) {
    out += parseInt(hash[i], 16) >= 8 ? lower[i].toUpperCase() : lower[i];
  }
  return out;
}

/** The i-th account of a case: the last 20 bytes of keccak256(label), checksummed. */
const account = (name, i) => checksum("0x" + hashHex(`data-market/merkle-vectors/${name}/${i}`).slice(24));

/** A varied positive amount up to ~10^24 base units (a million 18-decimal tokens). */
const amount = (name, i) => (BigInt("0x" + hashHex(`data-market/merkle-vectors/${name}/amount/${i}`)) % 10n ** 24n) + 1n;

function generatedCase(name, description, n) {
  const input = Array.from({ length: n }, (_, i) => [account(name, i), amount(name, i).toString()]);
  return { name, description, input };
}

const cases = [
  generatedCase("one-leaf", "single leaf: the root is the leaf and every proof is empty", 1),
  generatedCase("two-leaves", "two leaves: the root hashes the sorted pair", 2),
  generatedCase("three-leaves", "three leaves: an unbalanced tree, proofs of length 1 and 2", 3),
  generatedCase("seven-leaves", "seven leaves", 7),
  generatedCase("sixteen-leaves", "sixteen leaves: a perfect tree, every proof of length 4", 16),
  generatedCase("thirty-three-leaves", "thirty-three leaves: proofs of length 5 and 6", 33),
  {
    name: "large-amounts",
    description: "amounts at the edges of uint256: 1, 2^255-1, 2^255, 2^255+1, 2^256-1",
    input: [1n, TWO_255 - 1n, TWO_255, TWO_255 + 1n, 2n ** 256n - 1n].map((value, i) => [
      account("large-amounts", i),
      value.toString(),
    ]),
  },
  {
    name: "lowercase-addresses",
    description:
      "accounts given all-lowercase: same leaves and root as checksummed; the dump holds the " +
      "checksummed spelling (what the Python PayoutTree stores)",
    input: Array.from({ length: 5 }, (_, i) => [
      account("lowercase-addresses", i).toLowerCase(),
      amount("lowercase-addresses", i).toString(),
    ]),
  },
];

function assert(condition, message) {
  if (!condition) {
    console.error(`merkle-vectors: ${message}`);
    process.exit(2);
  }
}

function buildCase({ name, description, input }) {
  const values = input.map(([address, value]) => [checksum(address), value]);
  const tree = StandardMerkleTree.of(values, LEAF_ENCODING);
  const asGiven = StandardMerkleTree.of(input, LEAF_ENCODING);
  assert(
    JSON.stringify(asGiven.dump().tree) === JSON.stringify(tree.dump().tree),
    `${name}: the letter case of an address changed the tree`,
  );
  const dump = tree.dump();
  const leaves = dump.values.map(({ value, treeIndex }) => {
    const proof = tree.getProof(value);
    assert(StandardMerkleTree.verify(tree.root, LEAF_ENCODING, value, proof), `${name}: bad proof`);
    return {
      account: value[0],
      amount: value[1],
      leafHash: tree.leafHash(value),
      treeIndex,
      proof,
    };
  });
  const dumpJson = JSON.stringify(dump);
  StandardMerkleTree.load(JSON.parse(dumpJson)).validate();
  return { name, description, input, root: tree.root, leaves, dump, dumpJson };
}

const vectors = {
  description:
    "Payout-tree vectors: OpenZeppelin StandardMerkleTree over (address account, uint256 amount). " +
    "leafHash = keccak256(bytes.concat(keccak256(abi.encode(account, amount)))); internal node = " +
    "keccak256 of the sorted pair; proofs verify with MerkleProof.verify(proof, root, leafHash).",
  generator: "tools/vectors/merkle-vectors.mjs",
  library: `${library.name}@${library.version}`,
  leafEncoding: LEAF_ENCODING,
  cases: cases.map(buildCase),
};

const text = JSON.stringify(vectors, null, 2) + "\n";
if (check) {
  const current = existsSync(outFile) ? readFileSync(outFile, "utf8") : "";
  if (current !== text) {
    console.error(`${outFile} is stale: run node tools/vectors/merkle-vectors.mjs`);
    process.exit(1);
  }
  console.log(`${outFile} is up to date`);
} else {
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, text);
  console.log(`wrote ${vectors.cases.length} cases to ${outFile}`);
}
