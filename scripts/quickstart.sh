#!/usr/bin/env bash
# A one-node try-out: certificates, a node on loopback, a topic, records in and out.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
S=target/release/strait
STATE=${STATE:-.strait-quickstart}
mkdir -p "$STATE"
if [ ! -f "$STATE/certs/ca.crt" ]; then
  $S certs init --dir "$STATE/certs"
  $S certs issue --dir "$STATE/certs" --name node-1 --role node --host 127.0.0.1 --host localhost
  $S certs issue --dir "$STATE/certs" --name app --role client
fi
$S node run --cluster local --node-id 1 --listen 127.0.0.1:7400 --data-dir "$STATE/data" \
  --ca "$STATE/certs/ca.crt" --cert "$STATE/certs/node-1.crt" --key "$STATE/certs/node-1.key" &
NODE=$!
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null' EXIT
export STRAIT_BOOTSTRAP=127.0.0.1:7400 STRAIT_CA=$STATE/certs/ca.crt \
       STRAIT_CERT=$STATE/certs/app.crt STRAIT_KEY=$STATE/certs/app.key
for _ in $(seq 50); do $S topic list >/dev/null 2>&1 && break; sleep 0.1; done
$S topic create quickstart --partitions 4 --config flush=always 2>/dev/null || true
printf 'alice=hello\nbob=world\n' | $S produce quickstart --key-separator =
$S consume quickstart --from-beginning --json --idle-exit-ms 1000
$S topic describe quickstart
echo "node running on 127.0.0.1:7400 with the variables above; Ctrl-C to stop"
wait $NODE
