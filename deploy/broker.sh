#!/usr/bin/env bash
# Runs a local nisshi Kafka-protocol broker on 127.0.0.1 in the background.
#
# Usage:
#   deploy/broker.sh start [--port N] [--data-dir DIR] [--memory]
#   deploy/broker.sh stop  [--data-dir DIR]
#
# start: sqlite storage in DIR/nisshi.db (default DIR: ./.omnifold/broker), or
#        in-memory storage with --memory; writes DIR/broker.pid and DIR/broker.log,
#        then waits until the port accepts connections and prints
#        "broker ready on 127.0.0.1:N".
# stop:  sends SIGTERM to the broker of DIR and waits for it to exit.
#
# Topics: nisshi never auto-creates topics, and this script creates none on
# purpose. Each service creates the topics it needs (partitions, cleanup.policy)
# through the Kafka admin API at startup, so the topic layout lives in one place:
# the service code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly here
readonly host=127.0.0.1
readonly ready_timeout_secs=30
readonly stop_timeout_secs=10

port=9092
data_dir=./.omnifold/broker
memory=false

log() { printf 'broker: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
    sed -n '4,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

parse_args() {
    while (($#)); do
        case "$1" in
            --port) port="${2:?--port needs a value}"; shift 2 ;;
            --data-dir) data_dir="${2:?--data-dir needs a value}"; shift 2 ;;
            --memory) memory=true; shift ;;
            -h | --help) usage ;;
            *) log "unknown argument: $1"; usage ;;
        esac
    done
    [[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number, got $port"
}

# the nisshi binary: $OMNIFOLD_NISSHI if set, else installed on demand
nisshi_binary() {
    if [[ -n "${OMNIFOLD_NISSHI:-}" ]]; then
        printf '%s\n' "$OMNIFOLD_NISSHI"
    else
        "$here/install-broker.sh" | tail -1
    fi
}

running_pid() {
    local pid_file="$data_dir/broker.pid" pid
    [[ -f "$pid_file" ]] || return 1
    pid="$(<"$pid_file")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

storage_url() {
    if $memory; then
        printf 'memory://nisshi/\n'
    else
        # an absolute path needs four slashes: nisshi drops one leading "/"
        # and resolves what is left against its working directory
        printf 'sqlite:///%s/nisshi.db\n' "$data_dir"
    fi
}

wait_ready() {
    local pid="$1" deadline=$((SECONDS + ready_timeout_secs))
    until port_open; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$data_dir/broker.log" >&2 || true
            die "broker exited during startup, log: $data_dir/broker.log"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$data_dir/broker.log" >&2 || true
            die "broker not ready on $host:$port after ${ready_timeout_secs}s, log: $data_dir/broker.log"
        fi
        sleep 0.2
    done
}

start() {
    mkdir -p "$data_dir"
    data_dir="$(cd "$data_dir" && pwd)"
    if pid="$(running_pid)"; then
        die "a broker is already running from $data_dir (pid $pid)"
    fi
    if port_open; then
        die "port $host:$port is already in use"
    fi

    local nisshi
    nisshi="$(nisshi_binary)"
    [[ -x "$nisshi" ]] || die "nisshi binary not found at $nisshi"

    nohup "$nisshi" broker \
        --listener-url "tcp://$host:$port" \
        --advertised-listener-url "tcp://$host:$port" \
        --storage-engine "$(storage_url)" \
        --group-initial-rebalance-delay 0s \
        >"$data_dir/broker.log" 2>&1 </dev/null &
    local pid=$!
    printf '%s\n' "$pid" >"$data_dir/broker.pid"

    wait_ready "$pid"
    echo "broker ready on $host:$port"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "no broker running from $data_dir"
        rm -f "$data_dir/broker.pid"
        return 0
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + stop_timeout_secs))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "broker (pid $pid) ignored SIGTERM for ${stop_timeout_secs}s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$data_dir/broker.pid"
    echo "broker stopped (pid $pid)"
}

main() {
    local command="${1:-}"
    (($#)) && shift
    parse_args "$@"
    case "$command" in
        start) start ;;
        stop) stop ;;
        *) usage ;;
    esac
}

main "$@"
