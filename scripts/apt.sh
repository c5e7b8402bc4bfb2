# Debian packages for the project's scripts (sourced by bootstrap.sh and test.sh).

# Runs a command as root: directly where this is root, else through sudo.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# apt-get as root, waiting up to ten minutes for another apt or dpkg run to let go of its lock.
apt_get() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }

# Installs packages, saying so with the sourcing script's `say`. If that fails (stale package
# lists, say), it reads the lists again and tries once more, and then apt's own error is what
# the caller sees.
apt_install() {
  say "installing $* from Debian's packages"
  apt_get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt_get update -qq && apt_get install -y -qq "$@" >/dev/null; }
}
