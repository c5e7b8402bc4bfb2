#!/usr/bin/env bash
# Installs what orderflow needs on a fresh Debian machine, skipping whatever is already there:
# apt build dependencies, PostgreSQL (installed and started only where absent), and the
# tansu broker binary, built once with cargo and cached outside the checkout.
set -euo pipefail

ORDERFLOW_CACHE="${ORDERFLOW_CACHE:-$HOME/.cache/orderflow}"
TANSU_VERSION="0.6.0"
TANSU_PATCHES="$(cd "$(dirname "$0")" && pwd)/tansu-patches"
TANSU_PATCH_HASH=$( (cat "$TANSU_PATCHES"/*.patch 2>/dev/null || true) | sha256sum | cut -c1-12)
TANSU_BIN="$ORDERFLOW_CACHE/tansu-$TANSU_VERSION-$TANSU_PATCH_HASH/bin/tansu"

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/apt.sh"

# Build dependencies of librdkafka (bundled, built with cmake) and of the proto compiler.
APT_PACKAGES=(cmake build-essential pkg-config libssl-dev libcurl4-openssl-dev zlib1g-dev
  libsasl2-dev libzstd-dev protobuf-compiler python3-venv curl patch)

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
}

ensure_postgres() {
  local host="${PGHOST_ADDR:-127.0.0.1}" port="${PGPORT:-5432}"
  if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
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

# The broker is built from the crates.io source of tansu $TANSU_VERSION with the patches in
# scripts/tansu-patches/ applied (see docs/tansu.md). The binary is cached under a name that
# includes a hash of the patches, so a changed patch builds a new one; the build's target
# directory is kept, so such a rebuild recompiles only the patched crates.
ensure_tansu() {
  if [ -x "$TANSU_BIN" ]; then return; fi
  local work="$ORDERFLOW_CACHE/tansu-build" cargo_home="${CARGO_HOME:-$HOME/.cargo}"
  say "building the tansu $TANSU_VERSION broker (8 to 20 minutes on 2 cores the first time); it is cached in $ORDERFLOW_CACHE"
  # Fetch the published sources through cargo itself: a throwaway manifest that depends on tansu.
  mkdir -p "$work/fetch/src"
  printf '[package]\nname = "tansu-fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\ntansu = { version = "=%s", default-features = false }\n' \
    "$TANSU_VERSION" >"$work/fetch/Cargo.toml"
  : >"$work/fetch/src/lib.rs"
  cargo fetch -q --manifest-path "$work/fetch/Cargo.toml"
  local registry_src
  registry_src=$(dirname "$(ls -d "$cargo_home"/registry/src/*/"tansu-$TANSU_VERSION" | head -1)")
  rm -rf "$work/src"; mkdir -p "$work/src"
  cp -r "$registry_src/tansu-$TANSU_VERSION" "$work/src/tansu"
  # Its Cargo.lock pins every dependency; fetching it extracts the crates the patches touch.
  cargo fetch -q --locked --manifest-path "$work/src/tansu/Cargo.toml"
  local patch crate patched=()
  for patch in "$TANSU_PATCHES"/*.patch; do
    [ -e "$patch" ] || continue
    # Each patch touches one crate: its paths start with <crate>-<version>/.
    crate=$(grep -m1 '^+++ ' "$patch" | sed -E 's#^\+\+\+ (b/)?([^/]+)/.*#\2#')
    if [ ! -d "$work/src/$crate" ]; then
      cp -r "$registry_src/$crate" "$work/src/$crate"
      patched+=("$crate")
    fi
    say "applying $(basename "$patch") to $crate"
    patch -s -p1 -d "$work/src" <"$patch"
  done
  if [ ${#patched[@]} -gt 0 ]; then
    printf '\n[patch.crates-io]\n' >>"$work/src/tansu/Cargo.toml"
    for crate in "${patched[@]}"; do
      printf '%s = { path = "../%s" }\n' "${crate%-"$TANSU_VERSION"}" "$crate" >>"$work/src/tansu/Cargo.toml"
    done
  fi
  # Not --locked: the [patch] entries replace the patched crates' lock entries; every other
  # dependency keeps the version its Cargo.lock pins. Only the sqlite (libsql) storage is used.
  CARGO_TARGET_DIR="$work/target" cargo build --release --manifest-path "$work/src/tansu/Cargo.toml" \
    --no-default-features --features libsql --bin tansu
  mkdir -p "$(dirname "$TANSU_BIN")"
  cp "$work/target/release/tansu" "$TANSU_BIN.partial"
  mv "$TANSU_BIN.partial" "$TANSU_BIN"
}

main() {
  mkdir -p "$ORDERFLOW_CACHE"
  install_apt_packages
  ensure_postgres
  ensure_tansu
  echo "$TANSU_BIN"
}

main "$@"
