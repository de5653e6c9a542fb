#!/usr/bin/env bash
# deps.sh — installs the Debian packages warden's tests and quick start need, when missing:
# systemd and dbus (the sandbox boots them), util-linux and bsdutils (unshare, nsenter,
# script), python3-venv (the conda-like prefix), curl (the quick start talks to the app),
# prometheus (for its promtool: the alert rules and the metrics exposition are checked).
set -euo pipefail
need=()
for p in systemd dbus util-linux bsdutils python3-venv curl prometheus; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Only promtool is wanted: on a host booted with systemd the package also starts a
  # Prometheus server.
  if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi
command -v cargo >/dev/null || { echo "deps: cargo is required (rustup)" >&2; exit 1; }
