#!/usr/bin/env bash
# Rebuild contracts/GLMTest.bin and GLMTest.abi.json from GLMTest.sol with the
# npm `solc` compiler and `@openzeppelin/contracts`, installed into a scratch
# directory outside the repo (pinned versions, so the bytecode is reproducible).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${GOLEM_CONTRACTS_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/golem-contracts-build}"
SOLC_VERSION=0.8.28
OZ_VERSION=5.1.0
mkdir -p "$work"
cd "$work"
if [ ! -d node_modules/solc ] || [ ! -d node_modules/@openzeppelin/contracts ]; then
    npm init -y >/dev/null
    npm install --no-audit --no-fund "solc@$SOLC_VERSION" "@openzeppelin/contracts@$OZ_VERSION" >/dev/null
fi
cp "$here/GLMTest.sol" "$work/GLMTest.sol"
cat > compile.js <<'JS'
const fs = require('fs');
const solc = require('solc');
const input = {
  language: 'Solidity',
  sources: { 'GLMTest.sol': { content: fs.readFileSync('GLMTest.sol', 'utf8') } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'paris',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};
function findImports(path) {
  try { return { contents: fs.readFileSync('node_modules/' + path, 'utf8') }; }
  catch (e) { return { error: 'not found: ' + path }; }
}
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter(e => e.severity === 'error');
if (errors.length) { console.error(errors.map(e => e.formattedMessage).join('\n')); process.exit(1); }
const c = output.contracts['GLMTest.sol']['GLMTest'];
fs.writeFileSync(process.argv[2] + '/GLMTest.bin', c.evm.bytecode.object + '\n');
fs.writeFileSync(process.argv[2] + '/GLMTest.abi.json', JSON.stringify(c.abi, null, 2) + '\n');
console.log('solc ' + solc.version());
JS
node compile.js "$here"
echo "wrote $here/GLMTest.bin and $here/GLMTest.abi.json"
