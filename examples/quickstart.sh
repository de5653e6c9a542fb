#!/usr/bin/env bash
# Quick start: warden for real on the bundled example.
#
# Builds warden, lays out a conda-like prefix with Gunicorn from PyPI, boots the machine's own
# systemd in private namespaces (tests/harness/sysbox.sh; root only, the host is untouched) and
# installs the example contract: an app unit running Gunicorn from the prefix with
# ExecStartPre=warden check, and a worker unit on the same prefix. Then it shows a start that
# passes the check, the app answering, a unit drifting to the system Python, and the start that
# warden refuses, with its finding in the journal.
#
#   sudo examples/quickstart.sh         (QUICKSTART_PORT=18080 by default)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "quickstart: run as root (it boots systemd in namespaces)" >&2; exit 1; }
port=${QUICKSTART_PORT:-18080}
base=/var/tmp/warden-quickstart
export SYSBOX_DIR=/tmp/warden-quickstart-sysbox SYSBOX_BINDS=$base
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
WARDEN_UNITS=mes-dashboard-worker.service
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
step "done (the sandbox is torn down on exit)"
