#!/usr/bin/env bash
# The compat suite: unmodified yapapi 0.13.1 and golem-js 3.6 programs against a
# local golem-rs network on loopback.
#
#   tests/compat/run.sh [TEST...]        # default: every test below
#
# Tests: yapapi-hello (polling), yapapi-hello-stream (stream_output=True),
# yapapi-transfer (upload_bytes/download_bytes through gftp),
# yapapi-hello-service (a Service whose run() loop reads a file its start()
# keeps writing, stopped with cluster.stop()), golemjs-basic
# (rent one provider, run, upload + download a file, finish and pay); the VPN
# examples: yapapi-http-proxy (a two-instance service cluster in a network
# behind yapapi's LocalHttpProxy), golemjs-tcp-proxy (a server reached through
# golem-js's TcpProxy), golemjs-vpn (two rentals in one network reach each
# other). The VPN examples need two providers: a second provider daemon and
# agent start when one of them is asked for, and before they run both
# providers' offers must list `vpn` in golem.runtime.capabilities. The outbound
# examples: golemjs-outbound-whitelist (an unsigned payload manifest naming one
# URL, admitted by the provider's whitelist, fetched from inside the
# container) and yapapi-external-api-request (a manifest signed as the
# example's sign.sh does, by a test CA run.sh mints with openssl and the
# provider trusts for `audited-payload`): they need root (the provider loads nftables into the container's
# namespace); an HTTP server starts on the Docker bridge's host address with
# a JSON file (and on a second port the manifest does not name, which the
# container must not reach), its name is mapped by the agents' `--outbound-hosts` and
# whitelisted with `golem-provider whitelist add`, and the provider's offer
# must list `manifest-support` before it runs.
#
# It installs the clients (setup.sh, cached outside the repo), starts a provider
# daemon and a requestor daemon (the requestor bootstraps from the provider), a
# provider agent, and a loopback HTTP server for the image; then runs each program
# with only the environment the clients read (YAGNA_APPKEY, YAGNA_API_URL, ...),
# checks its exit code and output, then what the program paid as the requestor
# daemon recorded it (the platform of the program's payment, its amount, no
# allocation left open), that no container of the providers is left and, with anvil, that the provider's token balance grew
# by exactly that amount for an erc20 program and not at all for a dummy one;
# prints a table with the wall time of each.
#
# Environment:
#   SKIP_BUILD=1              do not run `cargo build` first
#   CARGO_TARGET_DIR          where the binaries are (default /var/tmp/golem-target)
#   GOLEM_COMPAT_PROFILE      cargo profile of the binaries (default debug; the bench uses release)
#   GOLEM_COMPAT_TIMEOUT      seconds each program may run (default 120)
#   GOLEM_COMPAT_IMAGE        the VM image file to serve (default: the busybox test image
#                             built by tests/images/build.sh and `docker save`d)
#   GOLEM_COMPAT_PAYMENT      how the programs pay:
#                             holesky: every program keeps the clients' default
#                               erc20-holesky-tglm; both daemons' erc20 `holesky` network
#                               points at a local anvil chain with the test token deployed
#                               and the requestor funded (as the original's own harness does);
#                             dummy: every program is told YAGNA_PAYMENT_DRIVER=dummy (network local);
#                             mixed: yapapi-hello, yapapi-hello-service, golemjs-basic,
#                               yapapi-http-proxy and golemjs-vpn on holesky (clients' defaults; the last two pay
#                               two providers), the others told to use dummy.
#                             Default: mixed when anvil is found (GOLEM_ANVIL_BIN or
#                             scripts/ensure-anvil.sh's cache), otherwise dummy with a note.
#   GOLEM_COMPAT_KEEP=1       keep the work dir (logs) after the run
#   GOLEM_COMPAT_RESULTS=F    also write the table rows (name status seconds paid-on amount
#                             balance-change first-response) to F; first-response is the
#                             seconds a program printed as FIRST_RESPONSE_AFTER, else -
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/golem-target}"
PROFILE="${GOLEM_COMPAT_PROFILE:-debug}"   # release for the benchmark
BIN="$CARGO_TARGET_DIR/$PROFILE"
PAYMENT_MODE="${GOLEM_COMPAT_PAYMENT:-auto}"
VPN_TESTS=(yapapi-http-proxy golemjs-tcp-proxy golemjs-vpn)
OUTBOUND_TESTS=(golemjs-outbound-whitelist yapapi-external-api-request)
ALL_TESTS=(yapapi-hello yapapi-hello-stream yapapi-transfer yapapi-hello-service golemjs-basic "${VPN_TESTS[@]}" "${OUTBOUND_TESTS[@]}")
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=("${ALL_TESTS[@]}")
NEED_VPN=0
NEED_OUTBOUND=0
for test in "${TESTS[@]}"; do
    for vpn_test in "${VPN_TESTS[@]}"; do [ "$test" != "$vpn_test" ] || NEED_VPN=1; done
    for outbound_test in "${OUTBOUND_TESTS[@]}"; do [ "$test" != "$outbound_test" ] || NEED_OUTBOUND=1; done
done

die() { echo "run.sh: $*" >&2; exit 1; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    PROFILE_FLAG=(); [ "$PROFILE" = debug ] || PROFILE_FLAG=(--profile "$PROFILE")
    PACKAGES=(-p golem-daemon -p golem-gftp -p golem-provider -p exe-unit-vm)
    (cd "$ROOT" && cargo build -q "${PROFILE_FLAG[@]}" "${PACKAGES[@]}" --bins) || die "cargo build failed"
fi
CACHE="$("$HERE/setup.sh")"

WORK="$(mktemp -d /tmp/golem-compat-XXXXXX)"
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${GOLEM_COMPAT_KEEP:-0}" = 1 ] || [ $status -ne 0 ]; then
        echo "run.sh: logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_daemon NAME EXTRA_ARGS... → sets ${NAME}_URL, ${NAME}_KEY, ${NAME}_DIR
start_daemon() {
    local name=$1; shift
    local dir="$WORK/$name" port
    port=$(free_port)
    mkdir -p "$dir"
    GOLEM_AUTOCONF_APPKEY="$name-appkey" RUST_LOG="${RUST_LOG:-info}" \
        "$BIN/golem-daemon" run --data-dir "$dir" --api-addr "127.0.0.1:$port" \
        --p2p-listen /ip4/127.0.0.1/tcp/0 --log-format json "$@" >/dev/null 2>"$dir.log" &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        grep -q "REST API ready" "$dir.log" 2>/dev/null && break
        sleep 0.05
    done
    grep -q "REST API ready" "$dir.log" || die "daemon $name did not start: $(tail -5 "$dir.log")"
    printf -v "${name}_URL" 'http://127.0.0.1:%s' "$port"
    printf -v "${name}_KEY" '%s' "$name-appkey"
    printf -v "${name}_DIR" '%s' "$dir"
}

# --- payment: the clients' default erc20-holesky-tglm on a local anvil chain ----
anvil_bin() {
    if [ -n "${GOLEM_ANVIL_BIN:-}" ] && [ -x "$GOLEM_ANVIL_BIN" ]; then echo "$GOLEM_ANVIL_BIN"; return; fi
    local cached="${GOLEM_ANVIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/golem-anvil}/node_modules/.bin/anvil"
    if [ -x "$cached" ]; then echo "$cached"; fi
}
ANVIL="$(anvil_bin)"
if [ "$PAYMENT_MODE" = auto ]; then
    if [ -n "$ANVIL" ]; then PAYMENT_MODE=mixed; else
        PAYMENT_MODE=dummy
        echo "run.sh: no anvil (run scripts/ensure-anvil.sh or set GOLEM_ANVIL_BIN): every program pays on dummy" >&2
    fi
fi
case "$PAYMENT_MODE" in dummy|holesky|mixed) ;; *) die "GOLEM_COMPAT_PAYMENT must be dummy, holesky or mixed" ;; esac
if [ "$PAYMENT_MODE" != dummy ]; then
    [ -n "$ANVIL" ] || die "GOLEM_COMPAT_PAYMENT=$PAYMENT_MODE needs anvil: run scripts/ensure-anvil.sh or set GOLEM_ANVIL_BIN"
    ANVIL_PORT=$(free_port)
    "$ANVIL" --port "$ANVIL_PORT" --host 127.0.0.1 --silent >"$WORK/anvil.log" 2>&1 &
    PIDS+=($!)
    ANVIL_URL="http://127.0.0.1:$ANVIL_PORT"
    for _ in $(seq 1 200); do
        curl -sf -H 'Content-Type: application/json' -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$ANVIL_URL" >/dev/null 2>&1 && break
        sleep 0.05
    done
    TOKEN=$(python3 "$HERE/anvil_token.py" deploy "$ANVIL_URL" "$ROOT/contracts/GLMTest.bin") || die "deploying the test token on anvil failed"
    # Both daemons read these (GOLEM_ERC20_<NETWORK>_<FIELD>): `holesky` is the local chain.
    export GOLEM_ERC20_HOLESKY_RPC_URL="$ANVIL_URL" GOLEM_ERC20_HOLESKY_CHAIN_ID=31337 GOLEM_ERC20_HOLESKY_TOKEN="$TOKEN"
fi

start_daemon provider
BOOTSTRAP=$("$BIN/golem-daemon" net status --json --data-dir "$provider_DIR" |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["listen_addrs"][0] + "/p2p/" + s["peer_id"])')
start_daemon requestor --bootstrap "$BOOTSTRAP"
PROVIDERS=(provider)
if [ "$NEED_VPN" = 1 ]; then
    start_daemon provider2 --bootstrap "$BOOTSTRAP"
    PROVIDERS+=(provider2)
fi
if [ "$PAYMENT_MODE" != dummy ]; then
    "$BIN/golem-daemon" payment fund --network holesky --amount 1000 --eth 10 --data-dir "$requestor_DIR" >"$WORK/fund.log" 2>&1 \
        || die "funding the requestor on anvil failed: $(tail -5 "$WORK/fund.log")"
fi

# --- the image, served on loopback -------------------------------------------
IMAGES="$WORK/images"
mkdir -p "$IMAGES"
"$ROOT/scripts/ensure-docker.sh" >/dev/null
if [ -n "${GOLEM_COMPAT_IMAGE:-}" ]; then
    cp "$GOLEM_COMPAT_IMAGE" "$IMAGES/image.gvmi"
else
    "$ROOT/tests/images/build.sh" busybox golem-compat-busybox:1 "$IMAGES/image.gvmi" >/dev/null 2>"$WORK/image-build.log" \
        || die "building the test image failed: $(tail -5 "$WORK/image-build.log")"
fi
IMAGE_HASH=$(python3 -c 'import hashlib,sys; print(hashlib.sha3_224(open(sys.argv[1],"rb").read()).hexdigest())' "$IMAGES/image.gvmi")
HTTP_PORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$IMAGES" "$HTTP_PORT" >"$WORK/http.log" 2>&1 &
PIDS+=($!)
IMAGE_URL="http://127.0.0.1:$HTTP_PORT/image.gvmi"
for _ in $(seq 1 100); do curl -sfI "$IMAGE_URL" >/dev/null 2>&1 && break; sleep 0.05; done

# --- the outbound example's "internet": a server on the Docker bridge's host side
OUTBOUND_HOST=registry.compat.test
OUTBOUND_ARGS=()
if [ "$NEED_OUTBOUND" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "the outbound example needs root: the provider loads nftables into the container's namespace"
    # The bridge's gateway as the engine lists it; some engines (docker.io
    # 20.10 on a fresh machine) list only the subnet: then docker0's address.
    BRIDGE_IP=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null || true)
    [ -n "$BRIDGE_IP" ] || BRIDGE_IP=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }')
    [ -n "$BRIDGE_IP" ] || die "cannot read the Docker bridge's gateway address (docker network inspect bridge; ip addr show docker0)"
    OUTBOUND_WWW="$WORK/outbound-www"
    mkdir -p "$OUTBOUND_WWW/-/package/@golem-sdk/golem-js"
    OUTBOUND_JSON='{"latest":"3.6.0","beta":"3.6.0-beta.1"}'
    printf '%s\n' "$OUTBOUND_JSON" >"$OUTBOUND_WWW/-/package/@golem-sdk/golem-js/dist-tags"
    mkdir -p "$OUTBOUND_WWW/api/v3/simple"
    OUTBOUND_PRICE=0.2468
    printf '{"golem": {"usd": %s}}\n' "$OUTBOUND_PRICE" >"$OUTBOUND_WWW/api/v3/simple/price"
    OUTBOUND_PORT=$(free_port)
    python3 -m http.server --bind "$BRIDGE_IP" --directory "$OUTBOUND_WWW" "$OUTBOUND_PORT" >"$WORK/outbound-http.log" 2>&1 &
    PIDS+=($!)
    # The same file on a second port, which the manifest does not name.
    OUTBOUND_DENIED_PORT=$(free_port)
    python3 -m http.server --bind "$BRIDGE_IP" --directory "$OUTBOUND_WWW" "$OUTBOUND_DENIED_PORT" >"$WORK/outbound-denied-http.log" 2>&1 &
    PIDS+=($!)
    OUTBOUND_URL="http://$OUTBOUND_HOST:$OUTBOUND_PORT"
    OUTBOUND_DENIED_URL="http://$OUTBOUND_HOST:$OUTBOUND_DENIED_PORT"
    for port in "$OUTBOUND_PORT" "$OUTBOUND_DENIED_PORT"; do
        for _ in $(seq 1 100); do curl -sfI "http://$BRIDGE_IP:$port/" >/dev/null 2>&1 && break; sleep 0.05; done
    done
    OUTBOUND_ARGS=(--outbound-hosts "$OUTBOUND_HOST=$BRIDGE_IP")
    # yapapi's external_api_request.py reads these files from its working
    # directory, made as the example's sign.sh makes them, by a leaf of a
    # test CA minted here (the CA is imported into each provider's keystore).
    SIGNING="$WORK/signing"
    mkdir -p "$SIGNING"
    {
        openssl req -x509 -newkey rsa:2048 -nodes -keyout "$SIGNING/root.key" -out "$SIGNING/root.pem" -days 2 \
            -subj "/CN=Compat Test Root" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey rsa:2048 -nodes -keyout "$SIGNING/sign.key" -out "$SIGNING/sign.csr" -subj "/CN=Compat Manifest Signer"
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' >"$SIGNING/leaf.ext"
        openssl x509 -req -in "$SIGNING/sign.csr" -CA "$SIGNING/root.pem" -CAkey "$SIGNING/root.key" -CAcreateserial \
            -days 2 -extfile "$SIGNING/leaf.ext" -out "$WORK/golem_sign.pem"
    } >"$SIGNING/openssl.log" 2>&1 || die "minting the test CA with openssl failed: $(tail -5 "$SIGNING/openssl.log")"
    python3 -c '
import json, sys
image_hash, image_url, api_url = sys.argv[1:]
print(json.dumps({
    "version": "0.1.0",
    "createdAt": "2024-01-01T00:00:00.000000Z",
    "expiresAt": "2100-01-01T00:01:00.000000Z",
    "metadata": {"name": "External API call example", "version": "0.1.0",
                 "description": "Example manifest of a service making an outbound call to the external API"},
    "payload": [{"platform": {"arch": "x86_64", "os": "linux"}, "urls": [image_url], "hash": "sha3:" + image_hash}],
    "compManifest": {"version": "0.1.0",
        "script": {"commands": ["run .*wget.*"], "match": "regex"},
        "net": {"inet": {"out": {"protocols": ["http"], "urls": [api_url]}}}},
}, indent=2))' "$IMAGE_HASH" "$IMAGE_URL" "$OUTBOUND_URL" >"$WORK/manifest_whitelist.json"
    base64 --wrap=0 "$WORK/manifest_whitelist.json" >"$WORK/manifest.json.base64"
    openssl dgst -sha256 -sign "$SIGNING/sign.key" -out "$WORK/manifest.json.base64.sha256.sig" "$WORK/manifest.json.base64" \
        || die "signing the manifest with openssl failed"
fi

# --- the provider agent -------------------------------------------------------
# The image is served on 127.0.0.1, so the provider explicitly allows private transfers.
SUBNET="compat-$$"
unset YAGNA_PAYMENT_DRIVER YAGNA_PAYMENT_NETWORK
start_agent() {
    local name=$1 url_var="${1}_URL" key_var="${1}_KEY" dir_var="${1}_DIR"
    local provider_cli=("$BIN/golem-provider" --data-dir "$WORK/agent-$name" --api-url "${!url_var}" --app-key "${!key_var}")
    if [ "$NEED_OUTBOUND" = 1 ]; then
        # The original's CLI, as a provider would: the example's host on the whitelist.
        "${provider_cli[@]}" whitelist add -p "$OUTBOUND_HOST" >"$WORK/agent-$name.whitelist.log" 2>&1 \
            || die "golem-provider whitelist add failed: $(tail -5 "$WORK/agent-$name.whitelist.log")"
        # ... and the test CA trusted for audited payloads.
        "${provider_cli[@]}" rule set outbound audited-payload import-cert "$SIGNING/root.pem" --mode all \
            >"$WORK/agent-$name.rule.log" 2>&1 \
            || die "golem-provider rule set outbound audited-payload import-cert failed: $(tail -5 "$WORK/agent-$name.rule.log")"
    fi
    "${provider_cli[@]}" --log-format json run --bus-socket "${!dir_var}/bus.sock" --subnet "$SUBNET" \
        --node-name "compat-$name" --exe-units vm --allow-private-transfers "${OUTBOUND_ARGS[@]}" \
        >/dev/null 2>"$WORK/agent-$name.log" &
    PIDS+=($!)
}
for name in "${PROVIDERS[@]}"; do start_agent "$name"; done
READY="provider agent ready"
for name in "${PROVIDERS[@]}"; do
    for _ in $(seq 1 600); do grep -q "$READY" "$WORK/agent-$name.log" 2>/dev/null && break; sleep 0.05; done
    grep -q "$READY" "$WORK/agent-$name.log" || die "the provider agent $name did not start: $(tail -5 "$WORK/agent-$name.log")"
done

# require_capability CAP HINT: each provider's own offer (its daemon's market
# API) must list CAP in golem.runtime.capabilities.
require_capability() {
    local cap=$1 hint=$2 name url_var key_var offers
    for name in "${PROVIDERS[@]}"; do
        url_var="${name}_URL" key_var="${name}_KEY"
        offers=$(curl -sf -H "Authorization: Bearer ${!key_var}" "${!url_var}/market-api/v1/offers") \
            || die "cannot list the offers of $name"
        python3 -c '
import json, sys
offers, cap = json.loads(sys.argv[1]), sys.argv[2]
def flat(props, prefix=""):
    out = {}
    for key, value in props.items():
        if isinstance(value, dict):
            out.update(flat(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out
caps = [flat(offer.get("properties", {})).get("golem.runtime.capabilities") for offer in offers]
sys.exit(0 if any(isinstance(c, list) and cap in c for c in caps) else "no offer lists %s: %r" % (cap, caps))
' "$offers" "$cap" || die "$name does not offer the $cap capability ($hint)"
    done
    echo "run.sh: every provider offers golem.runtime.capabilities with $cap" >&2
}
# The SDKs demand `vpn` for a network; a manifest with outbound URLs goes
# only to offers with `manifest-support` (and `inet`).
[ "$NEED_VPN" = 0 ] || require_capability vpn "is /dev/net/tun usable?"
if [ "$NEED_OUTBOUND" = 1 ]; then
    require_capability manifest-support "can the VM unit load nftables into a container's namespace?"
    require_capability inet "can the VM unit load nftables into a container's namespace?"
fi

# gftp for yapapi: our `gftp` binary on PATH, speaking to the requestor daemon's bus.
GFTP_DIR="$WORK/gftp-bin"
mkdir -p "$GFTP_DIR"
[ -x "$BIN/gftp" ] || die "$BIN/gftp is missing: cargo build -p golem-gftp"
ln -s "$BIN/gftp" "$GFTP_DIR/gftp"

# --- the programs ---------------------------------------------------------------
export YAGNA_APPKEY="$requestor_KEY" YAGNA_API_URL="$requestor_URL" YAGNA_SUBNET="$SUBNET"
export COMPAT_IMAGE_HASH="$IMAGE_HASH" COMPAT_IMAGE_URL="$IMAGE_URL"
export GSB_URL="unix://$requestor_DIR/bus.sock" GOLEM_BUS_SOCKET="$requestor_DIR/bus.sock"
export PATH="$GFTP_DIR:$PATH"
ROWS=()
FAILED=0

LEDGER=(python3 "$HERE/ledger.py")
PROVIDER_IDS=()
for name in "${PROVIDERS[@]}"; do
    url_var="${name}_URL" key_var="${name}_KEY"
    PROVIDER_IDS+=("$(curl -sf -H "Authorization: Bearer ${!key_var}" "${!url_var}/me" | python3 -c 'import json,sys; print(json.load(sys.stdin)["identity"])')")
done
# The containers the providers' exe units still have (labelled with the node).
provider_containers() {
    local id
    for id in "${PROVIDER_IDS[@]}"; do docker ps -aq --filter "label=golem.node-id=$id"; done
}
# What the providers hold together (a program may rent either of them).
provider_balance() {
    local total=0 id
    for id in "${PROVIDER_IDS[@]}"; do
        total=$(python3 -c 'import decimal,sys; print(decimal.Decimal(sys.argv[1]) + decimal.Decimal(sys.argv[2]))' "$total" \
            "$(python3 "$HERE/anvil_token.py" balance "$ANVIL_URL" "$TOKEN" "$id")")
    done
    echo "$total"
}
decimal_eq() { python3 -c 'import decimal,sys; sys.exit(0 if decimal.Decimal(sys.argv[1]) == decimal.Decimal(sys.argv[2]) else 1)' "$1" "$2"; }
decimal_sub() { python3 -c 'import decimal,sys; print(format((decimal.Decimal(sys.argv[1]) - decimal.Decimal(sys.argv[2])).normalize(), "f"))' "$1" "$2"; }

# The platform a program is expected to pay on: the clients' default (holesky)
# or dummy when told so. Only what it is told; run_program observes the platform
# it actually paid on.
platform_of() {
    case "$PAYMENT_MODE/$1" in
        dummy/*) echo dummy-local-tglm ;;
        holesky/*|mixed/yapapi-hello|mixed/yapapi-hello-service|mixed/golemjs-basic|mixed/yapapi-http-proxy|mixed/golemjs-vpn) echo erc20-holesky-tglm ;;
        *) echo dummy-local-tglm ;;
    esac
}

# run_program NAME CHECK_REGEX COMMAND...
run_program() {
    local name=$1 pattern=$2; shift 2
    local out="$WORK/$name.out" start end seconds status=ok expected payment_env=()
    local paid_on=none amount=- balance_change=- before after observed first_response
    expected=$(platform_of "$name")
    # Told to use dummy through the variables the clients themselves read; the
    # holesky programs get nothing (their built-in default).
    [ "$expected" = dummy-local-tglm ] && payment_env=(YAGNA_PAYMENT_DRIVER=dummy YAGNA_PAYMENT_NETWORK=local)
    "${LEDGER[@]}" ids "$requestor_URL" "$requestor_KEY" >"$WORK/$name.payments-before"
    [ "$PAYMENT_MODE" = dummy ] || before=$(provider_balance)
    start=$(date +%s.%N)
    if ! (cd "$WORK" && env "${payment_env[@]}" COMPAT_LOG_FILE="$WORK/$name.yapapi.log" timeout "${GOLEM_COMPAT_TIMEOUT:-120}" "$@") >"$out" 2>&1; then
        status="FAIL(exit)"
    elif ! grep -qE "$pattern" "$out"; then
        status="FAIL(output)"
    fi
    end=$(date +%s.%N)
    seconds=$(python3 -c "print(f'{$end - $start:.2f}')")
    # What the program paid, as the requestor daemon recorded it.
    if [ "$status" = ok ]; then
        if observed=$("${LEDGER[@]}" paid "$requestor_URL" "$requestor_KEY" "$WORK/$name.payments-before" 30 2>"$WORK/$name.ledger.err"); then
            read -r paid_on amount <<<"$observed"
            if [ "$paid_on" != "$expected" ]; then
                status="FAIL(platform)"
            elif [ "$("${LEDGER[@]}" open-allocations "$requestor_URL" "$requestor_KEY")" != 0 ]; then
                status="FAIL(allocation)"
            fi
        else
            status="FAIL(unpaid)"
            cat "$WORK/$name.ledger.err" >>"$out"
        fi
    fi
    # Every activity ended on the providers too: their containers are gone.
    if [ "$status" = ok ]; then
        for _ in $(seq 1 50); do [ -z "$(provider_containers)" ] && break; sleep 0.2; done
        if [ -n "$(provider_containers)" ]; then
            status="FAIL(containers)"
            echo "containers left on the providers: $(provider_containers | tr '\n' ' ')" >>"$out"
        fi
    fi
    # The provider's tokens on the chain: + exactly the amount for an erc20
    # payment (waited for: the transfer is mined before the payment is recorded,
    # the wait only covers RPC lag), unchanged for a dummy one.
    if [ "$status" = ok ] && [ "$PAYMENT_MODE" != dummy ]; then
        local want=0
        [ "$paid_on" = erc20-holesky-tglm ] && want=$amount
        for _ in $(seq 1 50); do
            after=$(provider_balance)
            balance_change=$(decimal_sub "$after" "$before")
            decimal_eq "$balance_change" "$want" && break
            sleep 0.2
        done
        if ! decimal_eq "$balance_change" "$want"; then
            status="FAIL(balance)"
            echo "provider balance changed by $balance_change, expected $want" >>"$out"
        fi
    fi
    first_response=$(awk '$1 == "FIRST_RESPONSE_AFTER" { print $2; exit }' "$out")
    ROWS+=("$name $status $seconds $paid_on $amount $balance_change ${first_response:--}")
    if [ "$status" != ok ]; then
        FAILED=1
        echo "---- $name: $status; last output lines:" >&2
        tail -25 "$out" >&2
    fi
}

# What busybox `date` prints in the image, e.g. "Sat Dec  5 08:30:00 UTC 2026".
DATE_OUTPUT='[A-Z][a-z]{2} [A-Z][a-z]{2} +[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2} [A-Z]+ [0-9]{4}'
PY="$CACHE/venv/bin/python"
NODE_PATH="$CACHE/node/node_modules"
for test in "${TESTS[@]}"; do
    case "$test" in
        yapapi-hello) run_program "$test" "RESULT>$DATE_OUTPUT<RESULT" "$PY" "$HERE/yapapi/hello.py" ;;
        yapapi-hello-stream) COMPAT_STREAM=1 run_program "$test" "STREAMED>$DATE_OUTPUT<STREAMED" "$PY" "$HERE/yapapi/hello.py" ;;
        yapapi-transfer) run_program "$test" 'ROUNDTRIP OK' "$PY" "$HERE/yapapi/transfer.py" ;;
        yapapi-hello-service) run_program "$test" 'HELLO SERVICE OK' "$PY" "$HERE/yapapi/hello_service.py" ;;
        golemjs-basic) NODE_PATH="$NODE_PATH" run_program "$test" 'GOLEMJS OK' node "$HERE/golem-js/basic.cjs" ;;
        yapapi-http-proxy) run_program "$test" 'HTTP PROXY OK' "$PY" "$HERE/yapapi/http_proxy.py" ;;
        golemjs-tcp-proxy) NODE_PATH="$NODE_PATH" run_program "$test" 'TCP PROXY OK' node "$HERE/golem-js/tcp-proxy.cjs" ;;
        golemjs-vpn) NODE_PATH="$NODE_PATH" run_program "$test" 'VPN OK' node "$HERE/golem-js/vpn.cjs" ;;
        golemjs-outbound-whitelist)
            NODE_PATH="$NODE_PATH" COMPAT_OUTBOUND_HOST="$OUTBOUND_HOST" COMPAT_OUTBOUND_URL="$OUTBOUND_URL" \
                COMPAT_OUTBOUND_DENIED_URL="$OUTBOUND_DENIED_URL" \
                COMPAT_OUTBOUND_JSON="$OUTBOUND_JSON" run_program "$test" 'OUTBOUND OK' node "$HERE/golem-js/outbound-whitelist.cjs" ;;
        yapapi-external-api-request)
            COMPAT_OUTBOUND_URL="$OUTBOUND_URL" COMPAT_OUTBOUND_PRICE="$OUTBOUND_PRICE" \
                run_program "$test" 'EXTERNAL API OK' "$PY" "$HERE/yapapi/external_api_request.py" ;;
        *) die "unknown test $test (known: ${ALL_TESTS[*]})" ;;
    esac
done

printf '\n| test | result | wall time (s) | paid on | paid (GLM) | provider balance change (GLM) | first response (s) |\n|---|---|---|---|---|---|---|\n'
for row in "${ROWS[@]}"; do
    read -r name status seconds paid_on amount balance_change first_response <<<"$row"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$status" "$seconds" "$paid_on" "$amount" "$balance_change" "$first_response"
done
printf '\nprovider: golem-provider + exe-unit-vm, payment mode: %s, gftp: %s\n' "$PAYMENT_MODE" "$BIN/gftp"
if [ -n "${GOLEM_COMPAT_RESULTS:-}" ]; then printf '%s\n' "${ROWS[@]}" >"$GOLEM_COMPAT_RESULTS"; fi
exit $FAILED
