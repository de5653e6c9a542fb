#!/usr/bin/env bash
# deps.sh — installs what warden's quick start or its tests need, and nothing else, when missing.
#
#   deps.sh [--for tests|quickstart] [--no-cargo]
#
#   --for quickstart  the Debian packages the sandbox and the demo need: systemd and dbus (the
#                     sandbox boots them), util-linux and bsdutils (unshare, nsenter, script),
#                     python3-venv (the conda-like prefix), curl (the demo talks to the app);
#                     also what tests/soak/soak.sh needs
#   --for tests       (the default) the same, plus etcd (the fleet tests), promtool (the alert
#                     rules and the metrics exposition are checked with it) and Alertmanager
#                     (the restart gate's client is tested against it)
#   --no-cargo        do not require cargo (the quick start against the installed package)
#
# promtool, etcd and Alertmanager are taken out of Debian's prometheus, etcd-server and
# prometheus-alertmanager packages without installing them: `apt-get download` and `dpkg-deb -x`,
# into $WARDEN_CI_CACHE/bin/{promtool,etcd,alertmanager} (default /var/cache/warden-ci/bin). No
# Prometheus, etcd or Alertmanager service is installed, enabled or started. tests/metrics.rs and
# .ci/run use $PROMTOOL, else that path; tests/alertmanager_live.rs that path, else
# $ALERTMANAGER. Prints nothing on stdout.
set -euo pipefail
mode=tests
cargo=true
while [ $# -gt 0 ]; do
  case $1 in
    --for) mode=${2:-}; shift 2 || shift ;;
    --for=*) mode=${1#--for=}; shift ;;
    --no-cargo) cargo=false; shift ;;
    -h|--help) sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "deps: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $mode in
  tests|quickstart) ;;
  *) echo "deps: --for takes tests or quickstart, not '$mode'" >&2; exit 2 ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_updated=false
apt_update() { $apt_updated || { apt-get update -qq; apt_updated=true; }; }

need=()
for p in systemd dbus util-linux bsdutils python3-venv curl; do
  installed "$p" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "deps: systemd dbus util-linux bsdutils python3-venv curl: installed" >&2
else
  echo "deps: installing ${need[*]} (apt)" >&2
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# A program out of a Debian package, without installing the package (no service enabled, no
# user created): `apt-get download` and `dpkg-deb -x`, into $cache/bin.
unpack() { # PACKAGE PATH-IN-PACKAGE NAME
  local tmp debs
  echo "deps: fetching $3 from Debian's $1 package into $cache/bin/$3 (not installed)" >&2
  tmp=$(mktemp -d)
  # apt-get download drops its privileges to _apt, which must be able to write there.
  if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
  if ! (cd "$tmp" && apt-get download -qq "$1" >/dev/null 2>&1); then
    apt_update
    (cd "$tmp" && apt-get download -qq "$1" >/dev/null)
  fi
  debs=("$tmp"/"$1"_*.deb)
  dpkg-deb -x "${debs[0]}" "$tmp/x"
  install -D -m 0755 "$tmp/x/$2" "$cache/bin/$3"
  rm -rf "$tmp"
  "$cache/bin/$3" --version >/dev/null || { echo "deps: $cache/bin/$3 does not run" >&2; exit 1; }
}

cache=${WARDEN_CI_CACHE:-/var/cache/warden-ci}
# The fleet's etcd: the tests' three-member cluster and the quick start's one member, on
# loopback.
"$cache/bin/etcd" --version >/dev/null 2>&1 || unpack etcd-server usr/bin/etcd etcd
if [ "$mode" = tests ]; then
  "$cache/bin/promtool" --version >/dev/null 2>&1 || unpack prometheus usr/bin/promtool promtool
  # The restart gate's Alertmanager, on loopback (Debian names its binary after the package).
  "$cache/bin/alertmanager" --version >/dev/null 2>&1 ||
    unpack prometheus-alertmanager usr/bin/prometheus-alertmanager alertmanager
fi

if $cargo; then
  command -v cargo >/dev/null || { echo "deps: cargo is required (https://rustup.rs)" >&2; exit 1; }
fi
