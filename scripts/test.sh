#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, checks formatting and lints, then runs
# every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive, as command:package: openssl (s_client), tmux (the CLI's
# terminal test, irssi), irssi and weechat-headless (real IRC clients), systemd-analyze (package
# systemd: `systemd-analyze verify` on the units of the Debian package; systemd need not run),
# promtool (package prometheus: checks the metrics exposition in tests/observe.rs), chromium (the
# web client's browser test, bot/tests/web_browser.rs) and node/npm (Node.js 20 or later: the web
# client's unit tests and Playwright), nats-server (the cluster tests, tests/cluster.rs, start
# throwaway NATS servers for the nodes' messages to each other; testkit/src/nats.rs), PostgreSQL
# (below).
need=()
for pair in openssl:openssl tmux:tmux irssi:irssi weechat-headless:weechat-headless systemd-analyze:systemd \
  chromium:chromium node:nodejs npm:npm nats-server:nats-server; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# PostgreSQL (tests/postgres.rs and the store's unit tests start throwaway servers with its initdb
# and pg_ctl, as the postgres account when root); its binaries are not on PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

# cargo-deb (crates.io) builds the Debian package that tests/package.rs installs with dpkg (as root;
# it skips, saying so, otherwise). Pinned to the version the packaging was tested with.
cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  cargo install cargo-deb --version "$cargo_deb_version" --locked
fi

# The public IRC parser test vectors (PyPI irc-parser-tests, module parser_tests) that
# proto/tests/irc_parser_tests.rs runs; it fails, not skips, without them. Debian's own python3
# refuses pip installs outside a venv (PEP 668): only then is --break-system-packages added.
if ! python3 -c 'import parser_tests' >/dev/null 2>&1; then
  python3 -m pip install --quiet irc-parser-tests ||
    python3 -m pip install --quiet --break-system-packages irc-parser-tests
fi

# Playwright (npm playwright-core, pinned by tests/web/package-lock.json) drives Debian's chromium
# in the browser test; no browser is downloaded. Then the web client's own unit tests.
(cd tests/web && npm ci --no-audit --no-fund --loglevel=error && node --test protocol.test.js)

# Style and lints first: they fail fast and say exactly where.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# Every binary is built before any test runs (the tests start chatd, chatd-bot, chat, chatd-bench).
cargo build --workspace --bins
cargo test --workspace
