#!/usr/bin/env python3
"""The compat suite's view of one program's payments, read from the requestor
daemon's own records (payment API), never inferred from how the program was
started.

    ledger.py ids API_URL APP_KEY
        # prints the ids of the payments the daemon has made so far, one a line
    ledger.py paid API_URL APP_KEY IDS_FILE TIMEOUT_SECS
        # waits until the daemon has made a payment not listed in IDS_FILE (then
        # 2 s more, for a second one); prints "PLATFORM AMOUNT" of the new
        # payments (exits 1 when there are none or they are on more than one
        # platform)
    ledger.py open-allocations API_URL APP_KEY
        # prints how many allocations are still open (not released)

Standard library only, like anvil_token.py.
"""
import decimal
import json
import sys
import time
import urllib.request


def get(api_url, app_key, path):
    request = urllib.request.Request(
        api_url.rstrip("/") + "/payment-api/v1" + path,
        headers={"Authorization": "Bearer " + app_key},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def ids(api_url, app_key):
    for payment in get(api_url, app_key, "/payments"):
        print(payment["paymentId"])


def paid(api_url, app_key, ids_file, timeout_secs):
    known = set(open(ids_file).read().split())
    deadline = time.time() + float(timeout_secs)
    new = []
    while time.time() < deadline:
        new = [p for p in get(api_url, app_key, "/payments") if p["paymentId"] not in known]
        if new:
            break
        time.sleep(0.2)
    if not new:
        sys.exit(f"ledger.py: no payment within {timeout_secs} s")
    # A program has one agreement; a second payment would come right after the first.
    time.sleep(2)
    new = [p for p in get(api_url, app_key, "/payments") if p["paymentId"] not in known]
    platforms = sorted({p["paymentPlatform"] for p in new})
    if len(platforms) != 1:
        sys.exit(f"ledger.py: payments on {platforms}: {new}")
    total = sum((decimal.Decimal(p["amount"]) for p in new), decimal.Decimal(0))
    print(platforms[0], format(total.normalize(), "f"))


def open_allocations(api_url, app_key):
    print(len(get(api_url, app_key, "/allocations")))


if __name__ == "__main__":
    commands = {"ids": (ids, 2), "paid": (paid, 4), "open-allocations": (open_allocations, 2)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands or len(sys.argv) != commands[sys.argv[1]][1] + 2:
        sys.exit(__doc__)
    function, _ = commands[sys.argv[1]]
    function(*sys.argv[2:])
