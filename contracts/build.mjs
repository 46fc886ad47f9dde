// Compiles contracts/*.sol with the pinned solcjs (node_modules/solc) over
// standard JSON and writes flocknode/chain/artifacts/<Contract>.json.
//
//   node contracts/build.mjs [--out DIR]
//
// Output is deterministic (sorted keys, 2-space indent, trailing newline), so
// the committed artifacts can be checked against a fresh build byte for byte.
import { createRequire } from "node:module";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");

const SOURCES = ["FlockToken.sol", "FlockTask.sol"];
const CONTRACTS = ["FlockToken", "FlockTask"];
const EIP170_LIMIT = 24576;

const SETTINGS = {
  evmVersion: "cancun",
  viaIR: true,
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function parseArgs(argv) {
  let out = join(root, "flocknode", "chain", "artifacts");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out" && i + 1 < argv.length) out = resolve(argv[++i]);
    else if (argv[i] === "--help" || argv[i] === "-h") {
      console.log("usage: node contracts/build.mjs [--out DIR]");
      process.exit(0);
    } else {
      console.error(`build.mjs: unknown argument ${argv[i]}`);
      process.exit(2);
    }
  }
  return { out };
}

// JSON with object keys sorted at every level (arrays keep their order).
function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const sorted = {};
    for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key]);
    return sorted;
  }
  return value;
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  let solc;
  try {
    solc = require(join(root, "node_modules", "solc"));
  } catch (err) {
    console.error("build.mjs: solc is not installed in node_modules (run make setup)");
    process.exit(1);
  }
  const sources = {};
  for (const file of SOURCES) {
    sources[file] = { content: readFileSync(join(here, file), "utf8") };
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) console.error(e.formattedMessage || e.message);
  if (errors.length) process.exit(1);

  mkdirSync(out, { recursive: true });
  let failed = false;
  for (const name of CONTRACTS) {
    const file = `${name}.sol`;
    const c = output.contracts?.[file]?.[name];
    if (!c) {
      console.error(`build.mjs: no output for ${file}:${name}`);
      process.exit(1);
    }
    const deployed = c.evm.deployedBytecode.object;
    const size = deployed.length / 2;
    const artifact = {
      contractName: name,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + deployed,
      compiler: { name: "solc", version: solc.version(), settings: SETTINGS },
    };
    writeFileSync(join(out, `${name}.json`), JSON.stringify(sortKeys(artifact), null, 2) + "\n");
    console.log(`${name}: ${size} bytes deployed (EIP-170 limit ${EIP170_LIMIT})`);
    if (size > EIP170_LIMIT) {
      console.error(`build.mjs: ${name} is over the EIP-170 limit`);
      failed = true;
    }
  }
  if (failed) process.exit(1);
}

main();
