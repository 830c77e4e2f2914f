#!/usr/bin/env bash
# The test command of the README: installs the broker if missing (once, ~12 minutes), then
# runs every test of the workspace. End-to-end tests start their own broker on free
# loopback ports; nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

# The reporter's page is checked in headless Chromium; without it that one test says it
# skipped. Install it where we may (root with apt), and go on without it elsewhere.
if ! command -v chromium >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the readback page test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "chromium did not install; the browser test will skip" >&2
fi

# The Prometheus config and alerting rules are checked with promtool, and one test has a real
# Prometheus scrape a coordinator (tests/tests/operations_tooling.rs); without Debian's
# prometheus package those tests say they skipped. Without recommends: no node exporter.
if ! command -v promtool >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing prometheus (promtool) for the operations tooling tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
        || echo "prometheus did not install; the promtool and prometheus tests will skip" >&2
fi

# TLS to Kafka is also tested through a TLS terminator in front of the broker, as a managed
# cluster's load balancer would be (tests/tests/kafka_security.rs); without Debian's stunnel4
# that test says it skipped.
if ! command -v stunnel4 >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing stunnel4 for the kafka tls test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stunnel4 >/dev/null) \
        || echo "stunnel4 did not install; the stunnel test will skip" >&2
fi

OMNIFOLD_NISSHI="$(deploy/install-broker.sh | tail -n 1)"
export OMNIFOLD_NISSHI
echo "using broker $OMNIFOLD_NISSHI" >&2

cargo test --workspace --locked "$@"
