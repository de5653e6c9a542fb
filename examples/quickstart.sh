#!/usr/bin/env bash
# Quick start: warden for real on the bundled example.
#
# Builds warden, lays out a conda-like prefix with Gunicorn from PyPI, boots the machine's own
# systemd in private namespaces (tests/harness/sysbox.sh; root only, the host is untouched) and
# installs the example contract: an app unit running Gunicorn from the prefix with
# ExecStartPre=warden check, and a worker unit on the same prefix. Then it shows a start that
# passes the check, the app answering, a unit drifting to the system Python, and the start that
# warden refuses, with its finding in the journal. Then the watchdog agent (warden run as a
# Type=notify unit): a restart flag becomes a verified graceful reload, the policy's cooldown
# refuses the next request, and the kill-switch is engaged (the app's new workers see it) and
# released, with `warden status` and `warden kill-switch` over the sandbox's D-Bus.
#
#   sudo examples/quickstart.sh         (QUICKSTART_PORT=18080 by default)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "quickstart: run as root (it boots systemd in namespaces)" >&2; exit 1; }
port=${QUICKSTART_PORT:-18080}
base=/var/tmp/warden-quickstart
export SYSBOX_DIR=/tmp/warden-quickstart-sysbox SYSBOX_BINDS=$base
export SYSBOX_DBUS_POLICY=$repo/systemd/io.warden.Agent.conf
sysbox="$repo/tests/harness/sysbox.sh"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
inside() { bash "$sysbox" run "$@"; }

step "dependencies and build"
bash "$repo/tests/harness/deps.sh"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
warden=$repo/target/release/warden
"$warden" --version

step "a conda-like prefix with gunicorn from PyPI"
bash "$repo/tests/harness/make-prefix.sh" "$base/conda" mes-dashboard
prefix=$base/conda/envs/mes-dashboard
# A fresh history each run: the demo shows its own requests.
rm -rf "$base/state"
mkdir -p "$base/etc" "$base/state"
chown www-data:www-data "$base/state"
cat > "$base/etc/mes-dashboard.env" <<EOF
RUNTIME_CONTRACT_VERSION=2026.02-p2
WATCHDOG_RUNTIME_DIR=/run/mes-dashboard
WATCHDOG_RESTART_FLAG=/run/mes-dashboard/mes_dashboard_restart.flag
WATCHDOG_PID_FILE=/run/mes-dashboard/gunicorn.pid
WATCHDOG_STATE_FILE=$base/state/restart_state.json
GUNICORN_BIND=127.0.0.1:$port
CONDA_BIN=$base/conda/bin/conda
CONDA_ENV_NAME=mes-dashboard
WARDEN_APP_UNIT=mes-dashboard.service
WARDEN_UNITS=mes-dashboard-worker.service,mes-dashboard-watchdog.service
WARDEN_KILL_SWITCH_FILE=/run/mes-dashboard/kill_switch.json
EOF
chown root:www-data "$base/etc/mes-dashboard.env"; chmod 640 "$base/etc/mes-dashboard.env"

step "boot a real systemd (sandbox) and install the units"
bash "$sysbox" down >/dev/null 2>&1 || true
eval "$(bash "$sysbox" up)"
trap 'bash "$sysbox" down' EXIT
units=$SYSBOX_DIR/run/systemd/system
cat > "$units/mes-dashboard.service" <<EOF
[Unit]
Description=MES dashboard (gunicorn from the conda prefix)

[Service]
Type=notify
User=www-data
Group=www-data
EnvironmentFile=$base/etc/mes-dashboard.env
RuntimeDirectory=mes-dashboard
RuntimeDirectoryPreserve=yes
ExecStartPre=$warden check
ExecStart=$prefix/bin/gunicorn --pid \${WATCHDOG_PID_FILE} --bind \${GUNICORN_BIND} --workers 2 --no-control-socket --chdir $repo/examples/gunicorn-app app:app
PIDFile=/run/mes-dashboard/gunicorn.pid
EOF
worker_unit() {
  printf '[Unit]\nDescription=MES dashboard worker\n\n[Service]\nUser=www-data\nEnvironmentFile=%s\nExecStart=%s -c "import signal; signal.pause()"\n' \
    "$base/etc/mes-dashboard.env" "$1" > "$units/mes-dashboard-worker.service"
}
worker_unit "$prefix/bin/python"
cat > "$units/mes-dashboard-watchdog.service" <<EOF
[Unit]
Description=MES dashboard watchdog (warden)
Requires=mes-dashboard.service
After=mes-dashboard.service

[Service]
Type=notify
User=www-data
EnvironmentFile=$base/etc/mes-dashboard.env
ExecStart=$warden run
WatchdogSec=10
Restart=on-failure
EOF
inside systemctl daemon-reload

step "warden contract (read from systemd over D-Bus)"
"$warden" contract --env-file "$base/etc/mes-dashboard.env"

step "start: ExecStartPre=warden check passes"
inside systemctl start mes-dashboard.service mes-dashboard-worker.service
inside systemctl --no-pager status mes-dashboard.service | head -n 12
inside journalctl --sync; bash "$sysbox" journal -u mes-dashboard.service -o cat | grep 'warden check' | tail -n 1
echo "GET http://127.0.0.1:$port/ ->"; curl -sS "http://127.0.0.1:$port/"

step "while it runs: warden check --phase running"
inside env -i PATH=/usr/bin:/bin "$warden" check --phase running --env-file "$base/etc/mes-dashboard.env"

step "drift: the worker unit moves to the system Python; the app's restart is refused"
worker_unit /usr/bin/python3
inside systemctl daemon-reload
if inside systemctl restart mes-dashboard.service; then
  echo "quickstart: the restart should have been refused" >&2; exit 1
fi
echo "mes-dashboard.service: $(inside systemctl show -p ActiveState,Result --value mes-dashboard.service | tr '\n' ' ')"
echo "its journal:"
inside journalctl --sync; bash "$sysbox" journal -u mes-dashboard.service -o cat | grep -A1 'error\[' | tail -n 2

step "fixed again: the start passes"
worker_unit "$prefix/bin/python"
inside systemctl daemon-reload
inside systemctl restart mes-dashboard.service
echo "mes-dashboard.service: $(inside systemctl is-active mes-dashboard.service)"

env=(--env-file "$base/etc/mes-dashboard.env")
step "the watchdog agent: warden run as a Type=notify unit with WatchdogSec=10"
inside systemctl start mes-dashboard-watchdog.service
inside systemctl show -p ActiveState -p StatusText mes-dashboard-watchdog.service
"$warden" status "${env[@]}"

step "a restart flag, written as the MES admin API writes it -> a verified graceful reload"
echo "before: $(curl -sS "http://127.0.0.1:$port/")"
inside sh -c 'printf "{\"user\": \"quickstart\", \"source\": \"manual\"}" > /run/mes-dashboard/.flag.tmp &&
  mv /run/mes-dashboard/.flag.tmp /run/mes-dashboard/mes_dashboard_restart.flag'
for _ in $(seq 1 150); do
  "$warden" status "${env[@]}" | grep -q 'last request: executed' && break
  sleep 0.2
done
"$warden" status "${env[@]}"
echo "after:  $(curl -sS "http://127.0.0.1:$port/")"
inside journalctl --sync; bash "$sysbox" journal -u mes-dashboard-watchdog.service -o cat | grep 'restart executed' | tail -n 1

step "warden restart within the cooldown: refused (exit 3)"
code=0; "$warden" restart --reason "quickstart, again" "${env[@]}" || code=$?
echo "exit code $code"
[ "$code" = 3 ] || { echo "quickstart: expected exit 3 (cooldown)" >&2; exit 1; }

step "kill-switch on: published for the app, one reload the policy does not block"
"$warden" kill-switch on --reason "quickstart rollback drill" "${env[@]}"
echo "the app now says: $(curl -sS "http://127.0.0.1:$port/")"
"$warden" kill-switch "${env[@]}"
step "kill-switch off"
"$warden" kill-switch off --reason "drill over" "${env[@]}"
echo "the app now says: $(curl -sS "http://127.0.0.1:$port/")"
step "done (the sandbox is torn down on exit)"
