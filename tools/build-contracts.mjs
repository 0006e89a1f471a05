// Compiles contracts/*.sol with the pinned solc-js (WebAssembly) through standard-JSON input and
// writes one artifact per contract into market/chain/artifacts/. Deterministic: same sources and
// settings give byte-identical artifacts, so CI can rebuild and diff.
//
//   node tools/build-contracts.mjs            # write artifacts
//   node tools/build-contracts.mjs --check    # exit 1 if the committed artifacts are stale
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const config = JSON.parse(readFileSync(join(root, "contracts/compiler.json"), "utf8"));
const solc = require("solc");
const outDir = join(root, "market/chain/artifacts");
const check = process.argv.includes("--check");

const fullVersion = solc.version();
if (!fullVersion.startsWith(config.solc + "+")) {
  console.error(`solc-js is ${fullVersion}, contracts/compiler.json pins ${config.solc}: run make install`);
  process.exit(2);
}

function listSources(dir, prefix) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listSources(join(dir, entry.name), rel));
    else if (entry.name.endsWith(".sol")) out.push(rel);
  }
  return out.sort();
}

const sources = {};
for (const rel of listSources(join(root, "contracts"), "")) {
  sources[`contracts/${rel}`] = { content: readFileSync(join(root, "contracts", rel), "utf8") };
}

function findImports(path) {
  const candidates = [join(root, "node_modules", path), join(root, path)];
  for (const candidate of candidates) {
    if (existsSync(candidate)) return { contents: readFileSync(candidate, "utf8") };
  }
  return { error: `import not found: ${path} (run make install)` };
}

const settings = {
  evmVersion: config.evmVersion,
  optimizer: config.optimizer,
  viaIR: config.viaIR,
  metadata: { bytecodeHash: "none" },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"] },
  },
};
const input = { language: "Solidity", sources, settings };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

let failed = false;
for (const err of output.errors ?? []) {
  if (err.severity === "error") failed = true;
  console.error(err.formattedMessage);
}
if (failed) process.exit(1);

const sha256 = (text) => createHash("sha256").update(text).digest("hex");
const sourceHashes = {};
for (const [name, src] of Object.entries(output.sources ?? {})) {
  const content = sources[name]?.content ?? findImports(name).contents;
  sourceHashes[name] = sha256(content);
}

mkdirSync(outDir, { recursive: true });
let stale = [];
for (const [file, contracts] of Object.entries(output.contracts)) {
  if (!file.startsWith("contracts/")) continue; // OpenZeppelin sources are inputs, not artifacts
  for (const [name, c] of Object.entries(contracts)) {
    if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
    const artifact = {
      contractName: name,
      sourceName: file,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      methodIdentifiers: c.evm.methodIdentifiers,
      compiler: { solc: fullVersion, settings: { ...settings, outputSelection: undefined } },
      sourceHashes,
    };
    const text = JSON.stringify(artifact, null, 2) + "\n";
    const path = join(outDir, `${name}.json`);
    if (check) {
      if (!existsSync(path) || readFileSync(path, "utf8") !== text) stale.push(name);
    } else {
      writeFileSync(path, text);
      console.log(`wrote ${path.slice(root.length + 1)} (${c.evm.deployedBytecode.object.length / 2} bytes runtime)`);
    }
  }
}
if (check) {
  if (stale.length) {
    console.error(`stale artifacts: ${stale.join(", ")}; run \`make contracts\` and commit market/chain/artifacts/`);
    process.exit(1);
  }
  console.log("artifacts are up to date");
}
