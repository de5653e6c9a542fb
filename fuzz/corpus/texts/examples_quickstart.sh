#!/usr/bin/env bash
# Quick start: warden for real on the bundled example, with the units warden ships.
#
# Lays out a conda-like prefix with Gunicorn from PyPI, boots the machine's own systemd in
# private namespaces (tests/harness/sysbox.sh; root only, the host is untouched) and installs
# the shipped units: systemd/mes-dashboard.service (Gunicorn from the prefix, with
# ExecStartPre=warden check), systemd/mes-dashboard-worker@.service and systemd/warden.service
# (the hardened agent). Drop-ins adapt them to this machine, as an operator would: the env file,
# the example app and, for the agent, a state directory outside the sandbox's read-only /var/lib.
# Then: check -> run -> a restart flag -> a verified graceful reload -> the policy's cooldown
# -> the kill-switch on and off (the app's new workers see it) -> a drifted unit refused at
# start -> `warden rehearse --rollback-drill`, printing the status as it goes.
#
#   sudo examples/quickstart.sh              this checkout's build and units
#   sudo examples/quickstart.sh --installed  the installed package's /usr/bin/warden and units
#
# QUICKSTART_PORT (default 18080) is the app's port.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "quickstart: run as root (it boots systemd in namespaces)" >&2; exit 1; }
installed=false
case "${1:-}" in
  --installed) installed=true ;;
  "") ;;
  *) echo "usage: $0 [--installed]" >&2; exit 2 ;;
esac
port=${QUICKSTART_PORT:-18080}
base=/var/tmp/warden-quickstart
app=$repo/examples/gunicorn-app
export SYSBOX_DIR=/tmp/warden-quickstart-sysbox SYSBOX_BINDS=$base
sysbox="$repo/tests/harness/sysbox.sh"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
inside() { bash "$sysbox" run "$@"; }

step "dependencies and warden"
bash "$repo/tests/harness/deps.sh"
if $installed; then
  warden=/usr/bin/warden
  agent_unit=/usr/lib/systemd/system/warden.service
  examples=/usr/share/doc/warden/examples
  export SYSBOX_DBUS_POLICY=/usr/share/dbus-1/system.d/io.warden.Agent.conf
  for f in "$warden" "$agent_unit" "$examples/mes-dashboard.service" "$SYSBOX_DBUS_POLICY"; do
    [ -e "$f" ] || { echo "quickstart: $f is missing: install the package (packaging/README.md)" >&2; exit 1; }
  done
else
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
  warden=$repo/target/release/warden
  agent_unit=$repo/systemd/warden.service
  examples=$repo/systemd
  export SYSBOX_DBUS_POLICY=$repo/systemd/io.warden.Agent.conf
fi
"$warden" --version

step "a conda-like prefix with gunicorn from PyPI"
bash "$repo/tests/harness/make-prefix.sh" "$base/conda" mes-dashboard
prefix=$base/conda/envs/mes-dashboard
# A fresh history each run: the demo shows its own requests.
rm -rf "$base/state"
mkdir -p "$base/etc" "$base/state"
chown www-data:www-data "$base/state"
env_file=$base/etc/mes-dashboard.env
cat > "$env_file" <<EOF
RUNTIME_CONTRACT_VERSION=2026.02-p2
WATCHDOG_RUNTIME_DIR=/run/mes-dashboard
WATCHDOG_RESTART_FLAG=/run/mes-dashboard/mes_dashboard_restart.flag
WATCHDOG_PID_FILE=/run/mes-dashboard/gunicorn.pid
WATCHDOG_STATE_FILE=$base/state/restart_state.json
GUNICORN_BIND=127.0.0.1:$port
CONDA_BIN=$base/conda/bin/conda
CONDA_ENV_NAME=mes-dashboard
WARDEN_APP_UNIT=mes-dashboard.service
WARDEN_UNITS=mes-dashboard-worker@1.service,warden.service
WARDEN_KILL_SWITCH_FILE=/run/mes-dashboard/kill_switch.json
EOF
chown root:www-data "$env_file"; chmod 640 "$env_file"

step "boot a real systemd (sandbox) and install the shipped units"
bash "$sysbox" down >/dev/null 2>&1 || true
eval "$(bash "$sysbox" up)"
trap 'bash "$sysbox" down' EXIT
units=$SYSBOX_DIR/run/systemd/system
# Linked, not copied: systemd runs the shipped files themselves; the drop-ins beside them hold
# everything that is this machine's.
ln -sf "$examples/mes-dashboard.service" "$units/mes-dashboard.service"
ln -sf "$examples/mes-dashboard-worker@.service" "$units/mes-dashboard-worker@.service"
ln -sf "$agent_unit" "$units/warden.service"
dropin() { mkdir -p "$units/$1.d"; cat > "$units/$1.d/$2.conf"; }
exec_lines() { # $1: the key, $2: the command (with this checkout's binary unless installed)
  if ! $installed || [[ $2 != *warden* ]]; then printf '%s=\n%s=%s\n' "$1" "$1" "$2"; fi
}
dropin mes-dashboard.service local <<EOF
[Service]
EnvironmentFile=
EnvironmentFile=$env_file
WorkingDirectory=$app
$(exec_lines ExecStartPre "$warden check")
ExecStart=
ExecStart=$prefix/bin/gunicorn --pid \${WATCHDOG_PID_FILE} --bind \${GUNICORN_BIND} --workers 2 --no-control-socket --chdir $app app:app
EOF
worker_exec() { # the example worker is a process that waits, on the given interpreter
  dropin mes-dashboard-worker@.service local <<EOF
[Service]
EnvironmentFile=
EnvironmentFile=$env_file
WorkingDirectory=$app
ExecStart=
ExecStart=$1 -c "import signal; signal.pause()"
EOF
}
worker_exec "$prefix/bin/python"
# The sandbox's /var/lib is the host's, read-only: the state lives in $base/state instead of
# StateDirectory=. PrivateTmp= would hide $base (below /var/tmp) from the agent.
dropin warden.service local <<EOF
[Service]
EnvironmentFile=
EnvironmentFile=$env_file
$(exec_lines ExecStartPre "$warden check --phase running")
$(exec_lines ExecStart "$warden run")
StateDirectory=
ReadWritePaths=$base/state
PrivateTmp=no
EOF
inside systemctl daemon-reload
env=(--env-file "$env_file")

step "warden contract (read from systemd over D-Bus)"
"$warden" contract "${env[@]}"

step "start: ExecStartPre=warden check passes; the app pulls in the agent (Wants=warden.service)"
inside systemctl start mes-dashboard.service mes-dashboard-worker@1.service
inside systemctl --no-pager status mes-dashboard.service | head -n 12
inside journalctl --sync; bash "$sysbox" journal -u mes-dashboard.service -o cat | grep 'warden check' | tail -n 1
echo "GET http://127.0.0.1:$port/ ->"; curl -sS "http://127.0.0.1:$port/"
inside systemctl show -p ActiveState -p StatusText warden.service
"$warden" status "${env[@]}"

step "the docs against the deployed contract: warden check --docs (what CI runs)"
inside env -i PATH=/usr/bin:/bin "$warden" check --phase running "${env[@]}" \
  --docs "$repo/README.md" --docs "$repo/docs/RUNBOOK.md"

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
inside journalctl --sync; bash "$sysbox" journal -u warden.service -o cat | grep 'restart executed' | tail -n 1

step "warden restart within the cooldown: refused (exit 3)"
code=0; "$warden" restart --reason "quickstart, again" "${env[@]}" || code=$?
echo "exit code $code"
[ "$code" = 3 ] || { echo "quickstart: expected exit 3 (cooldown)" >&2; exit 1; }

step "kill-switch on: published for the app, one reload the policy does not block"
"$warden" kill-switch on --reason "quickstart: feature off" "${env[@]}"
echo "the app now says: $(curl -sS "http://127.0.0.1:$port/")"
"$warden" kill-switch "${env[@]}"
step "kill-switch off"
"$warden" kill-switch off --reason "quickstart: feature back" "${env[@]}"
echo "the app now says: $(curl -sS "http://127.0.0.1:$port/")"

step "drift: a drop-in moves the worker to the system Python; the app's restart is refused"
worker_exec /usr/bin/python3
inside systemctl daemon-reload
if inside systemctl restart mes-dashboard.service; then
  echo "quickstart: the restart should have been refused" >&2; exit 1
fi
echo "mes-dashboard.service: $(inside systemctl show -p ActiveState,Result --value mes-dashboard.service | tr '\n' ' ')"
echo "its journal:"
inside journalctl --sync; bash "$sysbox" journal -u mes-dashboard.service -o cat | grep -A1 'error\[' | tail -n 2

step "fixed again: the app and the agent start"
worker_exec "$prefix/bin/python"
inside systemctl daemon-reload
inside systemctl restart mes-dashboard.service
inside systemctl start warden.service
echo "mes-dashboard.service: $(inside systemctl is-active mes-dashboard.service), warden.service: $(inside systemctl is-active warden.service)"

step "warden rehearse --rollback-drill: reload, verified from outside, then the kill-switch on and off"
# The agent just started with the history of the first reload, whose cooldown may still run:
# the rehearsal's reload is an acknowledged override, as the runbook's rehearsal is.
# Inside the sandbox: the PID file and the processes are in its namespaces.
inside "$warden" rehearse "${env[@]}" --health-url "http://127.0.0.1:$port/health" \
  --override --acknowledge --reason "quickstart rehearsal" --rollback-drill --target-seconds 30
echo "the app now says: $(curl -sS "http://127.0.0.1:$port/")"
"$warden" kill-switch "${env[@]}"
"$warden" status "${env[@]}"
step "done (the sandbox is torn down on exit)"
