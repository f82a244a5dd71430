#!/usr/bin/env python3
"""The compat suite's helper for the local anvil chain.

    anvil_token.py deploy RPC_URL BYTECODE_FILE   # deploy the GLM-like test token
                                                  # (contracts/GLMTest.bin) from the first
                                                  # dev account; prints its address
    anvil_token.py balance RPC_URL TOKEN OWNER    # prints OWNER's token balance in GLM
                                                  # (exact decimal)

Standard library only (the compat suite's network setup runs before any venv).
Exits non-zero with the RPC error when the chain refuses or the receipt fails.
"""
import decimal
import json
import sys
import time
import urllib.request


def rpc(url, method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    if "error" in answer:
        sys.exit(f"anvil_token.py: {method} failed: {answer['error']}")
    return answer["result"]


def balance(url, token, owner):
    data = "0x70a08231" + owner.lower().removeprefix("0x").rjust(64, "0")
    result = rpc(url, "eth_call", [{"to": token, "data": data}, "latest"])
    print(format((decimal.Decimal(int(result, 16)) / decimal.Decimal(10**18)).normalize(), "f"))


def deploy(url, bytecode_file):
    bytecode = open(bytecode_file).read().strip()
    if not bytecode.startswith("0x"):
        bytecode = "0x" + bytecode
    sender = rpc(url, "eth_accounts", [])[0]
    tx_hash = rpc(url, "eth_sendTransaction", [{"from": sender, "data": bytecode, "gas": "0x300000"}])
    deadline = time.time() + 20
    while time.time() < deadline:
        receipt = rpc(url, "eth_getTransactionReceipt", [tx_hash])
        if receipt:
            if receipt.get("status") != "0x1" or not receipt.get("contractAddress"):
                sys.exit(f"anvil_token.py: deployment failed: {receipt}")
            print(receipt["contractAddress"])
            return
        time.sleep(0.05)
    sys.exit(f"anvil_token.py: deployment {tx_hash} not mined within 20 s")


if __name__ == "__main__":
    commands = {"deploy": (deploy, 2), "balance": (balance, 3)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands or len(sys.argv) != commands[sys.argv[1]][1] + 2:
        sys.exit(__doc__)
    function, _ = commands[sys.argv[1]]
    function(*sys.argv[2:])
