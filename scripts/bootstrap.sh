#!/usr/bin/env bash
# Installs what orderflow needs on a fresh Debian machine, skipping whatever is already there:
# apt build dependencies, PostgreSQL (installed and started only where absent), and the
# tansu broker binary, built once with cargo and cached outside the checkout.
set -euo pipefail

ORDERFLOW_CACHE="${ORDERFLOW_CACHE:-$HOME/.cache/orderflow}"
TANSU_VERSION="0.6.0"
TANSU_BIN="$ORDERFLOW_CACHE/tansu-$TANSU_VERSION/bin/tansu"

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Build dependencies of librdkafka (bundled, built with cmake) and of the proto compiler;
# sqlite3 adds an index the local tansu broker lacks (crates/platform/src/tansu.rs).
APT_PACKAGES=(cmake build-essential pkg-config libssl-dev libcurl4-openssl-dev zlib1g-dev
  libsasl2-dev libzstd-dev protobuf-compiler python3-venv curl sqlite3)

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing apt packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_postgres() {
  local host="${PGHOST_ADDR:-127.0.0.1}" port="${PGPORT:-5432}"
  if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "installing PostgreSQL from Debian's packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  # Local trust auth over TCP, as on the project's machines; only where we installed it.
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "orderflow" "$hba" 2>/dev/null; then
    as_root sh -c "printf '%s\n' '# orderflow: local trust auth' 'host all all 127.0.0.1/32 trust' 'host all all ::1/128 trust' | cat - '$hba' > '$hba.new' && mv '$hba.new' '$hba'"
  fi
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_isready -q -h "$host" -p "$port" && break; sleep 0.5; done
  pg_isready -h "$host" -p "$port" >/dev/null || { say "PostgreSQL did not come up on $host:$port"; exit 1; }
  # The services connect as the `postgres` role (trust); make sure `root` can too.
  as_root su postgres -c "psql -qtc \"SELECT 1 FROM pg_roles WHERE rolname='root'\" | grep -q 1 || createuser -s root" || true
}

ensure_tansu() {
  if [ -x "$TANSU_BIN" ]; then return; fi
  say "building the tansu $TANSU_VERSION broker once (about 12 minutes on 2 cores); it is cached in $ORDERFLOW_CACHE"
  cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore,libsql \
    --root "$ORDERFLOW_CACHE/tansu-$TANSU_VERSION.partial"
  mv "$ORDERFLOW_CACHE/tansu-$TANSU_VERSION.partial" "$ORDERFLOW_CACHE/tansu-$TANSU_VERSION"
}

main() {
  mkdir -p "$ORDERFLOW_CACHE"
  install_apt_packages
  ensure_postgres
  ensure_tansu
  echo "$TANSU_BIN"
}

main "$@"
