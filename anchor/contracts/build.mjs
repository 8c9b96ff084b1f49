#!/usr/bin/env node
// Compiles Anchor.sol with solc-js (the exact version pinned in ../package.json)
// and writes Anchor.json beside it: ABI, the contract's notices (userdoc),
// creation and runtime bytecode, compiler version and settings. Anchor.json is
// committed; run this after changing Anchor.sol (from anchor: `npm ci`
// once, then `npm run build`).
//
//   node contracts/build.mjs            writes contracts/Anchor.json
//   node contracts/build.mjs --stdout   prints the artifact instead (the tests compare it)

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const SOURCE = "Anchor.sol";
const CONTRACT = "Anchor";
// no PUSH0 (Shanghai) or later opcodes: permissioned Besu chains are often on London
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "london",
};

const input = {
  language: "Solidity",
  sources: { [SOURCE]: { content: readFileSync(join(here, SOURCE), "utf8") } },
  settings: {
    ...SETTINGS,
    outputSelection: { [SOURCE]: { [CONTRACT]: ["abi", "userdoc", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const messages = output.errors ?? [];
for (const m of messages) console.error(m.formattedMessage.trimEnd());
if (messages.some((m) => m.severity === "error")) {
  console.error(`${SOURCE}: compilation failed`);
  process.exit(1);
}

const compiled = output.contracts[SOURCE][CONTRACT];
const artifact = {
  contractName: CONTRACT,
  sourceName: SOURCE,
  compiler: { name: "solc-js", version: solc.version(), settings: SETTINGS },
  abi: compiled.abi,
  // the contract's @notice comments: what its errors mean, in words for the operator
  userdoc: compiled.userdoc,
  bytecode: "0x" + compiled.evm.bytecode.object,
  deployedBytecode: "0x" + compiled.evm.deployedBytecode.object,
};
const text = JSON.stringify(artifact, null, 2) + "\n";

if (process.argv.includes("--stdout")) {
  process.stdout.write(text);
} else {
  writeFileSync(join(here, "Anchor.json"), text);
  console.error(`wrote ${join(here, "Anchor.json")} (solc ${solc.version()})`);
}
