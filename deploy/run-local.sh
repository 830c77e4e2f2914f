#!/usr/bin/env bash
# The README's run command: omnifold's main job on this machine.
#
# Installs the broker if missing, builds the services, starts the broker (sqlite storage
# under .omnifold/local) and the coordinator, feeds the bundled sample (4 channels, 200
# SKUs, two weeks of orders, shipments, stock counts and a supply squeeze) through the
# generic connector, and prints alerts and escalations as the coordinator publishes them.
#
#   deploy/run-local.sh [--keep-running]
#
# Environment: OMNIFOLD_PORT (default 19092), OMNIFOLD_SAMPLE (an NDJSON file to feed instead).
set -euo pipefail
cd "$(dirname "$0")/.."

keep_running=false
[[ "${1:-}" == "--keep-running" ]] && keep_running=true

port="${OMNIFOLD_PORT:-19092}"
bootstrap="127.0.0.1:$port"
work=.omnifold/local
sample="${OMNIFOLD_SAMPLE:-deploy/local/sample-events.ndjson}"
contract=deploy/local/contract.toml

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing the broker if missing"
deploy/install-broker.sh >/dev/null

say "building omnifold (release)"
cargo build --release --locked -p omnifold-coordinator -p omnifold-connector -p omnifold-reporter
bin=target/release

# A fresh run every time: the sample is replayed from an empty broker and store.
deploy/broker.sh stop --data-dir "$work/broker" >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"

cleanup() {
    [[ -n "${watch_pid:-}" ]] && kill "$watch_pid" 2>/dev/null || true
    [[ -n "${tail_pid:-}" ]] && kill "$tail_pid" 2>/dev/null || true
    if ! $keep_running; then
        [[ -n "${coordinator_pid:-}" ]] && kill "$coordinator_pid" 2>/dev/null || true
        deploy/broker.sh stop --data-dir "$work/broker" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

say "starting the broker on $bootstrap"
deploy/broker.sh start --port "$port" --data-dir "$work/broker"

say "starting the coordinator"
"$bin/omnifold-coordinator" check-contract "$contract"
"$bin/omnifold-coordinator" run --bootstrap "$bootstrap" --contract "$contract" \
    --store "$work/coordinator" --metrics 127.0.0.1:9464 >"$work/coordinator.log" 2>&1 &
coordinator_pid=$!
until grep -q "caught up" "$work/coordinator.log"; do
    kill -0 "$coordinator_pid" 2>/dev/null || { cat "$work/coordinator.log"; exit 1; }
    sleep 0.2
done

say "alerts, escalations (PAGE) and dead letters as they are published"
"$bin/omnifold-coordinator" watch --bootstrap "$bootstrap" >"$work/watch.log" 2>&1 &
watch_pid=$!
tail -n +1 -f "$work/watch.log" &
tail_pid=$!

say "feeding $(wc -l <"$sample") sample events through the connector" >&2
# The sample's two weeks, then the first fact of the Monday after: event time moving past
# the end of week 47 (plus the allowed lateness) is what closes that week for the reporter.
cat "$sample" deploy/local/next-monday.ndjson >"$work/feed.ndjson"
"$bin/omnifold-connector" ndjson --bootstrap "$bootstrap" --file "$work/feed.ndjson" 2>&1 | tee "$work/connector.log"
published=$(sed -nE 's/.* ([0-9]+) events published.*/\1/p' "$work/connector.log" | tail -n 1)

# Wait until the coordinator has folded everything and gone quiet.
# Wait until the coordinator has folded every published event (it logs its running total
# each time it catches up), then give the watch a moment to print the last records.
folded() { sed -nE 's/.*caught up.*events[^0-9]*([0-9]+).*/\1/p' "$work/coordinator.log" | tail -n 1; }
until (($(folded) >= published)); do
    kill -0 "$coordinator_pid" 2>/dev/null || { tail -n 20 "$work/coordinator.log"; exit 1; }
    sleep 0.5
done
# Folded is not yet sent: a batch's outputs leave after its fsync, through the outbox. Wait
# until the coordinator's outbox gauge reads 0 twice in a row (a batch between its write and
# its fsync is not counted yet), then give the watch a moment to print the last records.
outbox_pending() {
    exec 3<>/dev/tcp/127.0.0.1/9464 || return 0
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    sed -nE 's/^omnifold_outbox_pending_records ([0-9]+).*/\1/p' <&3
    exec 3>&-
}
drained=0
for _ in $(seq 60); do
    if [[ "$(outbox_pending)" == 0 ]]; then drained=$((drained + 1)); else drained=0; fi
    ((drained < 2)) || break
    sleep 1
done
sleep 2
kill "$watch_pid" "$tail_pid" 2>/dev/null || true
wait "$watch_pid" "$tail_pid" 2>/dev/null || true
unset watch_pid tail_pid

events=$(folded)

say "weekly channel contribution (reporter)"
"$bin/omnifold-reporter" run --bootstrap "$bootstrap" --contract "$contract" --store "$work/reporter" \
    --instance-id local-reporter --session-timeout-ms 6000 \
    --exit-when-caught-up >"$work/reporter.log" 2>&1
for week in 2026-W46 2026-W47; do
    "$bin/omnifold-reporter" show --bootstrap "$bootstrap" --week "$week"
    "$bin/omnifold-reporter" page --bootstrap "$bootstrap" --week "$week" --out "$work/report-$week.html"
done
say "open conflicts and pages (operations readback)"
"$bin/omnifold-reporter" operations --bootstrap "$bootstrap" --contract "$contract" \
    --store "$work/operations" --out "$work/operations.html" 2>>"$work/operations.log"
"$bin/omnifold-reporter" handover wholesale --bootstrap "$bootstrap" --contract "$contract" \
    --store "$work/operations" --out "$work/handover-wholesale.html" --markdown "$work/handover-wholesale.md" \
    >/dev/null 2>>"$work/operations.log"
scarcity=$("$bin/omnifold-coordinator" watch --bootstrap "$bootstrap" --availability --idle-exit-secs 2 | grep -c "AVAIL.*SCARCITY" || true)
say "summary"
echo "events folded:        $events"
echo "alerts raised:        $(grep -c ' ALERT RAISED' "$work/watch.log" || true)"
echo "alerts resolved:      $(grep -c ' ALERT RESOLVED' "$work/watch.log" || true)"
echo "escalations (pages):  $(grep -c ' PAGE ' "$work/watch.log" || true)"
echo "dead letters:         $(grep -c 'DEAD-LETTER' "$work/watch.log" || true)"
echo "scarcity decisions:   $scarcity availability changes made in SCARCITY mode"
echo "raised by kind:"
grep ' ALERT RAISED' "$work/watch.log" | awk '{print $6}' | sort | uniq -c | sed 's/^/  /'
echo
echo "availability decisions: $bin/omnifold-coordinator watch --bootstrap $bootstrap --availability"
echo "suggestions, routing:   $bin/omnifold-coordinator watch --bootstrap $bootstrap --advice"
echo "metrics:                http://127.0.0.1:9464/metrics (while running)"
echo "logs:                   $work/coordinator.log, $work/watch.log, $work/reporter.log"
echo
echo "readback pages:         $PWD/$work/report-2026-W46.html"
echo "                        $PWD/$work/report-2026-W47.html"
echo "                        $PWD/$work/operations.html, $PWD/$work/handover-wholesale.html"
echo "                        (or live: $bin/omnifold-reporter serve --bootstrap $bootstrap)"
if $keep_running; then
    echo "broker and coordinator keep running; stop with: deploy/broker.sh stop --data-dir $work/broker; kill $coordinator_pid"
fi
