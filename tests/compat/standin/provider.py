#!/usr/bin/env python3
"""Stand-in provider agent for the compat suite, used only while the real
`golem-provider` cannot run here (run.sh picks it with GOLEM_COMPAT_PROVIDER=standin).

It talks to its daemon's REST API like the real agent: subscribes one offer shaped
like a ya-provider VM offer (so unmodified yapapi / golem-js demands match it),
counters every Draft, approves every agreement, spawns one `exe-unit-wasm` per
CreateActivity event (spawn contract of ARCHITECTURE.md; the "image" is a wasm
package whose entry point is named `/bin/sh`), and issues + sends an invoice when
the requestor terminates the agreement. Stdlib only. Prints "standin provider ready"
once the offer is subscribed. Exits when the daemon stops answering.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--bus-socket", required=True)
    parser.add_argument("--exe-unit", required=True, help="path of exe-unit-wasm")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--subnet", default="public")
    parser.add_argument("--platforms", default="erc20-holesky-tglm,dummy-local-tglm")
    return parser.parse_args()


class Api:
    def __init__(self, url, key):
        self.url = url.rstrip("/")
        self.key = key

    def call(self, method, path, body=None, timeout=70):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + self.key)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
            return json.loads(text) if text else None


def offer(node_id, subnet, platforms):
    properties = {
        "golem.node.id.name": "standin-provider",
        "golem.node.debug.subnet": subnet,
        "golem.runtime.name": "vm",
        "golem.runtime.capabilities": ["vpn", "inet", "manifest-support"],
        "golem.inf.mem.gib": 4.0,
        "golem.inf.storage.gib": 10.0,
        "golem.inf.cpu.threads": 2,
        "golem.inf.cpu.cores": 2,
        "golem.com.scheme": "payu",
        "golem.com.pricing.model": "linear",
        "golem.com.pricing.model.linear.coeffs": [0.0001, 0.0001, 0.001],
        "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        "golem.com.payment.protocol.version": 3,
        "golem.com.payment.debit-notes.accept-timeout?": 240,
        "golem.srv.caps.multi-activity": True,
        "golem.activity.caps.transfer.protocol": ["gftp", "http", "https"],
    }
    for platform in platforms:
        properties["golem.com.payment.platform.%s.address" % platform] = node_id
    constraints = "(&(golem.srv.comp.expiration>%d)(golem.node.debug.subnet=%s))" % (
        int(time.time() * 1000),
        subnet,
    )
    return {"properties": properties, "constraints": constraints}


def negotiate(api, offer_id, body):
    while True:
        try:
            events = api.call("GET", "/market-api/v1/offers/%s/events?timeout=5&maxEvents=10" % offer_id)
        except Exception as error:  # the daemon is gone: stop
            print("standin: offer events failed: %s" % error, file=sys.stderr)
            os._exit(0)
        for event in events or []:
            kind = event.get("eventType")
            try:
                if kind == "ProposalEvent" and event["proposal"]["state"] == "Draft":
                    api.call(
                        "POST",
                        "/market-api/v1/offers/%s/proposals/%s" % (offer_id, event["proposal"]["proposalId"]),
                        body,
                    )
                elif kind == "AgreementEvent":
                    api.call("POST", "/market-api/v1/agreements/%s/approve" % event["agreement"]["agreementId"])
            except Exception as error:
                print("standin: negotiation step failed: %s" % error, file=sys.stderr)


def activities(api, args):
    after = None
    children = {}
    while True:
        path = "/activity-api/v1/events?timeout=5"
        if after:
            path += "&afterTimestamp=" + urllib.request.quote(after)
        try:
            events = api.call("GET", path)
        except Exception as error:
            print("standin: activity events failed: %s" % error, file=sys.stderr)
            os._exit(0)
        for event in events or []:
            after = event["eventDate"]
            activity_id = event["activityId"]
            if event["eventType"] == "CreateActivity":
                agreement = api.call("GET", "/market-api/v1/agreements/" + event["agreementId"])
                directory = os.path.join(args.work_dir, activity_id)
                os.makedirs(os.path.join(directory, "work"), exist_ok=True)
                agreement_file = os.path.join(directory, "agreement.json")
                with open(agreement_file, "w") as handle:
                    json.dump(agreement, handle)
                log = open(os.path.join(directory, "exe-unit.log"), "w")
                children[activity_id] = subprocess.Popen(
                    [
                        args.exe_unit, "run",
                        "--activity-id", activity_id,
                        "--agreement", agreement_file,
                        "--work-dir", os.path.join(directory, "work"),
                        "--cache-dir", os.path.join(args.work_dir, "cache"),
                        "--bus-socket", args.bus_socket,
                    ],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                )
            elif event["eventType"] == "DestroyActivity":
                child = children.pop(activity_id, None)
                if child is not None:
                    child.terminate()


def invoices(api):
    """Invoice each agreement once the requestor terminated it."""
    invoiced = set()
    while True:
        try:
            agreements = api.call("GET", "/market-api/v1/agreements")
        except Exception:
            os._exit(0)
        for entry in agreements or []:
            agreement_id = entry["id"]
            if agreement_id in invoiced or entry.get("role") == "Requestor":
                continue
            agreement = api.call("GET", "/market-api/v1/agreements/" + agreement_id)
            if agreement.get("state") != "Terminated":
                continue
            invoiced.add(agreement_id)
            try:
                invoice = api.call("POST", "/payment-api/v1/invoices", {"agreementId": agreement_id, "amount": "0.001"})
                api.call("POST", "/payment-api/v1/invoices/%s/send" % invoice["invoiceId"])
            except Exception as error:
                print("standin: invoicing %s failed: %s" % (agreement_id, error), file=sys.stderr)
        time.sleep(0.05)


def main():
    args = parse_args()
    api = Api(args.api_url, args.app_key)
    api.node_id = api.call("GET", "/me")["identity"]
    body = offer(api.node_id, args.subnet, [p for p in args.platforms.split(",") if p])
    offer_id = api.call("POST", "/market-api/v1/offers", body)
    threading.Thread(target=negotiate, args=(api, offer_id, body), daemon=True).start()
    threading.Thread(target=activities, args=(api, args), daemon=True).start()
    threading.Thread(target=invoices, args=(api,), daemon=True).start()
    print("standin provider ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
