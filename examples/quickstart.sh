#!/usr/bin/env bash
# Quick start: warden for real, on two apps, each watched by its own agent from the shipped
# template, in a real systemd that leaves the host as it was.
#
# It builds warden (or, with --installed, takes the installed package's), lays out a conda-like
# prefix with Gunicorn from PyPI, boots the machine's own systemd as PID 1 of private namespaces
# (tests/harness/sysbox.sh: the host's systemd, services and /etc are not touched; the sandbox's
# /etc is a copy-on-write layer over the host's) and deploys:
#   mes-dashboard  the bundled example app (examples/gunicorn-app) under the shipped
#                  systemd/mes-dashboard.service and mes-dashboard-worker@.service, port
#                  QUICKSTART_PORT (default 18080);
#   shop           the same app code under a unit of its own, port QUICKSTART_SHOP_PORT
#                  (default QUICKSTART_PORT + 1), runtime directory /run/shop;
#   warden@mes-dashboard.service, warden@shop.service
#                  the agents, instances of the shipped systemd/warden@.service.
# The contracts are /etc/warden/APP.env inside the sandbox (root:www-data 0640); drop-ins adapt
# the shipped units to this machine, as an operator would (systemctl edit). Then, typed inside
# the sandbox as an operator types them (a clean environment, no --env-file):
#   warden status --all, check, contract -> a restart flag -> a verified reload (the other app's
#   workers untouched) -> `warden restart` refused in the cooldown (exit 3) -> the kill-switch
#   on and off -> a drifted unit refused at start -> `warden rehearse --rollback-drill` ->
#   `warden restart` of the other app, verified.
#
# Needs root and the package registries: apt (the Debian packages below, when missing), PyPI
# (gunicorn, for the prefix) and crates.io (warden's dependencies, for the build; not with
# --installed). On the host it installs, only when missing, the Debian packages systemd, dbus,
# util-linux, bsdutils (to boot the sandbox), python3-venv (the prefix) and curl (to talk to the
# apps). Everything else goes to /var/tmp/warden-quickstart and /tmp/warden-quickstart-sysbox
# (about 110 MB: two conda envs and the sandbox's journal), removed at the end unless --keep.
#
#   sudo examples/quickstart.sh              this checkout's build and units
#   sudo examples/quickstart.sh --installed  the installed package's /usr/bin/warden and units
#   sudo examples/quickstart.sh --keep       leave the deployment up at the end, to explore
#   sudo examples/quickstart.sh --shell      an operator's root shell inside a kept deployment
#   sudo examples/quickstart.sh --down       tear a kept deployment down, remove its files
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
self=$(basename "$0")

usage() {
  cat <<EOF
usage: sudo examples/$self [--installed] [--keep]
       sudo examples/$self --shell | --down

Deploys two apps (mes-dashboard, shop), each with its warden agent (warden@APP.service from the
shipped template), in this machine's own systemd booted in private namespaces, and walks through
warden as an operator uses it. The host's services and /etc are left as they were.

  --installed  use the installed package (/usr/bin/warden, its units) instead of this
               checkout's build (cargo build --release) and units
  --keep       leave the deployment up at the end (else it is torn down and its files removed)
  --shell      a root shell inside a kept deployment, with a clean environment: type warden
               commands there as on a host (warden status --all, warden restart --app shop …);
               commands on stdin are run without a prompt
  --down       tear a kept deployment down and remove its files
  -h, --help   this help

Environment: QUICKSTART_PORT (default 18080), the port of mes-dashboard; QUICKSTART_SHOP_PORT
(default QUICKSTART_PORT + 1), the port of shop.

Needs root and the package registries: apt (systemd, dbus, util-linux, bsdutils, python3-venv,
curl, installed only when missing), PyPI (gunicorn) and crates.io (the build; not with
--installed). Its files: /var/tmp/warden-quickstart and /tmp/warden-quickstart-sysbox.
EOF
}

installed=false keep=false action=run
for arg in "$@"; do
  case $arg in
    --installed) installed=true ;;
    --keep) keep=true ;;
    --shell) action=shell ;;
    --down) action=down ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; echo "$self: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
if [ "$action" != run ] && [ $# -ne 1 ]; then
  usage >&2; echo "$self: --shell and --down take no other argument" >&2; exit 2
fi
[ "$(id -u)" = 0 ] || { echo "$self: run as root (it boots systemd in namespaces): sudo examples/$self" >&2; exit 1; }

port=${QUICKSTART_PORT:-18080}
shop_port=${QUICKSTART_SHOP_PORT:-$((port + 1))}
# The fleet's etcd (one member, on loopback): its client and peer ports.
etcd_port=${QUICKSTART_ETCD_PORT:-$((port + 2))}
etcd_peer_port=$((etcd_port + 1))
etcd_cached=${WARDEN_CI_CACHE:-/var/cache/warden-ci}/bin/etcd
base=/var/tmp/warden-quickstart
lock=/tmp/warden-quickstart.lock
app=$repo/examples/gunicorn-app
sysbox=$repo/tests/harness/sysbox.sh
export SYSBOX_DIR=/tmp/warden-quickstart-sysbox
# What an operator's root shell has: no DBUS_*, no WARDEN_*, no contract variables.
op_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

t0=$SECONDS
bold() { printf '\033[1m%s\033[0m\n' "$*"; }
step() { current=$*; printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "$self: $*" >&2; exit 1; }
inside() { bash "$sysbox" run "$@"; }
# A command as an operator types it in a root shell on the host (here: inside the sandbox).
op() { printf '\033[2m# %s\033[0m\n' "$(shown "$@")"; inside "${op_env[@]}" "$@"; }
shown() { # the words as an operator types them, quoted where the shell needs it
  local w out=() q="'"
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then out+=("$w"); else out+=("$q${w//$q/$q\\$q$q}$q"); fi
  done
  echo "${out[*]}"
}
opq() { inside "${op_env[@]}" "$@"; }
journal() { inside journalctl --sync; bash "$sysbox" journal "$@"; }
is_up() { bash "$sysbox" pid >/dev/null 2>&1; }

# One quick start at a time: a second one refuses instead of tearing the first one down.
lock() {
  local other i
  for i in 1 2 3; do
    if mkdir "$lock" 2>/dev/null; then echo $$ > "$lock/pid"; return 0; fi
    other=$(cat "$lock/pid" 2>/dev/null || true)
    if [ -z "$other" ]; then sleep 1; continue; fi # being taken: look again
    if kill -0 "$other" 2>/dev/null && grep -qa quickstart "/proc/$other/cmdline" 2>/dev/null; then
      die "another quick start is running (pid $other); wait for it to end: it removes its deployment itself (or, once it has ended with --keep, run: sudo examples/$self --down)"
    fi
    rm -rf "$lock" # its owner is gone
  done
  die "cannot take $lock; if no quick start runs, remove it: rm -rf $lock"
}
unlock() { [ "$(cat "$lock/pid" 2>/dev/null)" = $$ ] && rm -rf "$lock"; return 0; }

teardown() {
  bash "$sysbox" down >/dev/null 2>&1 || true
  rm -rf "$SYSBOX_DIR" "$base"
}

case $action in
  shell)
    is_up || die "no deployment is up: run sudo examples/$self --keep first"
    if [ -t 0 ]; then
      cat <<EOF
An operator's root shell inside the quick start's sandbox (its systemd, bus and /etc/warden);
the environment is clean, as after a login. Try:
  warden status --all            systemctl status warden@shop.service
  warden check --app shop --phase running
  warden restart --app shop --reason "trying it"
  journalctl -u warden@mes-dashboard.service
exit (or Ctrl-D) leaves it; sudo examples/$self --down removes the deployment.
EOF
    fi
    exec bash "$sysbox" run "${op_env[@]}" HOME=/root HISTFILE= TERM="${TERM:-dumb}" \
      PS1='[warden-quickstart] \u:\w\$ ' bash --norc
    ;;
  down)
    lock
    trap unlock EXIT
    if is_up || [ -e "$SYSBOX_DIR" ] || [ -e "$base" ]; then
      teardown
      echo "$self: the deployment is down; $base and $SYSBOX_DIR are removed"
    else
      echo "$self: nothing to tear down"
    fi
    exit 0
    ;;
esac

lock
if is_up; then
  unlock
  die "a quick start deployment is up (kept with --keep): use it with sudo examples/$self --shell, or remove it with sudo examples/$self --down"
fi
for p in "$port" "$shop_port" "$etcd_port" "$etcd_peer_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    unlock
    die "port $p is in use on this machine: set QUICKSTART_PORT (and QUICKSTART_SHOP_PORT, QUICKSTART_ETCD_PORT) to free ports"
  fi
done
current="the start"
finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    echo >&2
    echo "$self: FAILED (exit $rc) at: $current" >&2
    if is_up; then
      echo "$self: the sandbox's journal, last lines:" >&2
      journal -n 40 -o short-monotonic >&2 2>/dev/null || true
    fi
  fi
  if $keep; then
    if [ "$rc" != 0 ] && is_up; then
      echo "$self: --keep: the deployment stays up for a look: sudo examples/$self --shell; then --down" >&2
    fi
  else
    teardown
    [ "$rc" = 0 ] && echo "$self: the sandbox is down; $base and $SYSBOX_DIR are removed"
  fi
  unlock
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bold "warden quick start: two apps, each with its agent, in a real systemd"
if $installed; then what="the installed package (/usr/bin/warden and its units)"; else what="this checkout, built now (cargo build --release)"; fi
cat <<EOF
What it does: warden from $what
watches two Gunicorn apps, mes-dashboard (port $port) and shop (port $shop_port), each with
its own agent, in this machine's own systemd booted in private namespaces; the host's services
and /etc are not touched. Then warden is used as an operator uses it.
Needs the package registries: apt, PyPI (gunicorn, for the apps' conda-like prefixes)$($installed || echo ",
crates.io (warden's dependencies, for the build)").
Installs on this machine, only those missing: systemd, dbus (the sandbox boots them), util-linux,
bsdutils (unshare, nsenter, script: to enter it), python3-venv (the prefixes), curl (to ask the apps).
Its files: $base and $SYSBOX_DIR, $($keep && echo "kept at the end (--keep)" || echo "removed at the end").
EOF

step "dependencies (apt, only what is missing: systemd dbus util-linux bsdutils python3-venv curl)"
if $installed; then
  bash "$repo/tests/harness/deps.sh" --for quickstart --no-cargo
else
  bash "$repo/tests/harness/deps.sh" --for quickstart
fi

rm -rf "$base"
mkdir -p "$base"
if $installed; then
  step "warden: the installed package"
  template=/usr/lib/systemd/system/warden@.service
  examples=/usr/share/doc/warden/examples
  docs=(/usr/share/doc/warden/README.md /usr/share/doc/warden/RUNBOOK.md)
  export SYSBOX_DBUS_POLICY=/usr/share/dbus-1/system.d/io.warden.Agent.conf
  for f in /usr/bin/warden "$template" "$examples/mes-dashboard.service" \
           "$examples/mes-dashboard-worker@.service" "$SYSBOX_DBUS_POLICY" "${docs[@]}"; do
    [ -e "$f" ] || die "$f is missing: install the package (packaging/README.md)"
  done
  /usr/bin/warden --version
else
  step "warden: this checkout, built (cargo build --release; the first build takes minutes)"
  cargo build --release --manifest-path "$repo/Cargo.toml"
  target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  # A copy: a rebuild while this runs does not change what runs.
  install -D -m 0755 "$target/release/warden" "$base/bin/warden"
  "$base/bin/warden" --version
  template=$repo/systemd/warden@.service
  examples=$repo/systemd
  docs=("$repo/README.md" "$repo/docs/RUNBOOK.md")
  export SYSBOX_DBUS_POLICY=$repo/systemd/io.warden.Agent.conf
fi

step "a conda-like prefix with gunicorn from PyPI: one env per app"
# pip's cache goes with the rest of the quick start's files.
export PIP_CACHE_DIR=$base/cache/pip
bash "$repo/tests/harness/make-prefix.sh" "$base/conda" mes-dashboard
bash "$repo/tests/harness/make-prefix.sh" "$base/conda" shop
echo "$base/conda: $(du -sh "$base/conda" | cut -f1)"

step "the contracts: /etc/warden/mes-dashboard.env and /etc/warden/shop.env (root:www-data 0640)"
# The sandbox's /etc is the host's with these laid over it (SYSBOX_ETC): the host's /etc is not
# written. The state files are below $base: the sandbox's /var/lib is the host's, read-only.
mkdir -p "$base/etc/warden" "$base/state/mes-dashboard" "$base/state/shop"
chown www-data:www-data "$base/state/mes-dashboard" "$base/state/shop"
cat > "$base/etc/warden/mes-dashboard.env" <<EOF
# The contract of mes-dashboard: the agent's (warden@mes-dashboard.service reads it) and loaded
# by every unit of the app (EnvironmentFile=/etc/warden/mes-dashboard.env).
RUNTIME_CONTRACT_VERSION=2026.02-p2
WATCHDOG_RUNTIME_DIR=/run/mes-dashboard
WATCHDOG_RESTART_FLAG=/run/mes-dashboard/mes_dashboard_restart.flag
WATCHDOG_PID_FILE=/run/mes-dashboard/gunicorn.pid
WATCHDOG_STATE_FILE=$base/state/mes-dashboard/restart_state.json
GUNICORN_BIND=127.0.0.1:$port
CONDA_BIN=$base/conda/bin/conda
CONDA_ENV_NAME=mes-dashboard
WARDEN_APP_UNIT=mes-dashboard.service
WARDEN_UNITS=mes-dashboard-worker@1.service
WARDEN_KILL_SWITCH_FILE=/run/mes-dashboard/kill_switch.json
# The agent probes the app every 10 s; automatic recovery records what it would do.
WARDEN_HEALTH_URL=http://127.0.0.1:$port/health
WARDEN_AUTO_RECOVERY=dry-run
# One reload at a time across the fleet group "quickstart" (here: this host's two apps).
WARDEN_ETCD_ENDPOINTS=http://127.0.0.1:$etcd_port
WARDEN_FLEET_GROUP=quickstart
EOF
cat > "$base/etc/warden/shop.env" <<EOF
# The contract of shop (its app unit, shop.service, is implied by the file's name).
RUNTIME_CONTRACT_VERSION=2026.02-p2
WATCHDOG_RUNTIME_DIR=/run/shop
WATCHDOG_RESTART_FLAG=/run/shop/restart.flag
WATCHDOG_PID_FILE=/run/shop/gunicorn.pid
WATCHDOG_STATE_FILE=$base/state/shop/restart_state.json
GUNICORN_BIND=127.0.0.1:$shop_port
CONDA_BIN=$base/conda/bin/conda
CONDA_ENV_NAME=shop
WARDEN_KILL_SWITCH_FILE=/run/shop/kill_switch.json
WARDEN_ETCD_ENDPOINTS=http://127.0.0.1:$etcd_port
WARDEN_FLEET_GROUP=quickstart
EOF
chown root:www-data "$base"/etc/warden/*.env
chmod 640 "$base"/etc/warden/*.env
ls -l "$base/etc/warden"

step "boot a real systemd (the sandbox) and install the shipped units, with this machine's drop-ins"
export SYSBOX_ETC=$base/etc SYSBOX_BINDS=$base
# The groups the package creates (sysusers): the agents own their bus names as members of
# `warden`. sysbox.sh adds, inside only, those the host lacks.
export SYSBOX_GROUPS="warden warden-admin"
eval "$(bash "$sysbox" up)"
if ! $installed; then
  # This checkout's warden as /usr/bin/warden inside the sandbox (an overlay in its own mount
  # namespace; the host's /usr/bin is not touched): the shipped units run it by that path, and
  # an operator types `warden`.
  mkdir -p "$SYSBOX_DIR/usr-bin/upper" "$SYSBOX_DIR/usr-bin/work"
  install -m 0755 "$base/bin/warden" "$SYSBOX_DIR/usr-bin/upper/warden"
  inside mount -t overlay quickstart-usr-bin \
    -o "lowerdir=/usr/bin,upperdir=$SYSBOX_DIR/usr-bin/upper,workdir=$SYSBOX_DIR/usr-bin/work" /usr/bin
  echo "inside the sandbox, /usr/bin/warden is this checkout's build (the host's /usr/bin is untouched)"
fi
units=$SYSBOX_DIR/run/systemd/system
# Linked, not copied: systemd runs the shipped files themselves; the drop-ins beside them hold
# everything that is this machine's.
ln -sf "$examples/mes-dashboard.service" "$units/mes-dashboard.service"
ln -sf "$examples/mes-dashboard-worker@.service" "$units/mes-dashboard-worker@.service"
ln -sf "$template" "$units/warden@.service"
dropin() { mkdir -p "$units/$1.d"; cat > "$units/$1.d/$2.conf"; }
mes_prefix=$base/conda/envs/mes-dashboard
shop_prefix=$base/conda/envs/shop
dropin mes-dashboard.service local <<EOF
[Service]
EnvironmentFile=
EnvironmentFile=/etc/warden/mes-dashboard.env
WorkingDirectory=$app
ExecStart=
ExecStart=$mes_prefix/bin/gunicorn --pid \${WATCHDOG_PID_FILE} --bind \${GUNICORN_BIND} --workers 2 --no-control-socket --chdir $app app:app
EOF
worker_exec() { # the example worker is a process that waits, on the given interpreter
  dropin mes-dashboard-worker@.service local <<EOF
[Service]
EnvironmentFile=
EnvironmentFile=/etc/warden/mes-dashboard.env
WorkingDirectory=$app
ExecStart=
ExecStart=$1 -c "import signal; signal.pause()"
EOF
}
worker_exec "$mes_prefix/bin/python"
cat > "$units/shop.service" <<EOF
# The quick start's second app: the same example app code, its own prefix, port and runtime
# directory.
[Unit]
Description=shop (Gunicorn from the conda prefix)
After=network.target

[Service]
Type=notify
User=www-data
Group=www-data
EnvironmentFile=/etc/warden/shop.env
WorkingDirectory=$app
ExecStartPre=/usr/bin/warden check --app shop
ExecStart=$shop_prefix/bin/gunicorn --pid \${WATCHDOG_PID_FILE} --bind \${GUNICORN_BIND} --workers 2 --no-control-socket --chdir $app app:app
ExecReload=/usr/bin/warden reload --app shop --wait
PIDFile=/run/shop/gunicorn.pid
RuntimeDirectory=shop
RuntimeDirectoryMode=0750
RuntimeDirectoryPreserve=yes
Restart=on-failure
KillMode=mixed
TimeoutStopSec=30
EOF
# The agents: the app's user, as the template asks; their state below $base instead of
# StateDirectory= (the sandbox's /var/lib is the host's, read-only); PrivateTmp= would hide
# $base (below /var/tmp) from them.
for a in mes-dashboard shop; do
  dropin "warden@$a.service" local <<EOF
[Service]
User=www-data
Group=www-data
ReadWritePaths=$base/state/$a
StateDirectory=
PrivateTmp=no
EOF
done
# The fleet's etcd, one member on loopback (a real fleet runs three or five, on other hosts):
# Debian's binary, which deps.sh took out of its package, beside the deployment's files.
mkdir -p "$base/etcd" "$base/bin"
install -m 0755 "$etcd_cached" "$base/bin/etcd"
etcd_bin=$base/bin/etcd
cat > "$units/quickstart-etcd.service" <<EOF
[Unit]
Description=etcd for the quick start's fleet group (one member, loopback)

[Service]
Type=notify
ExecStart=$etcd_bin --name quickstart --data-dir $base/etcd/data \\
  --listen-client-urls http://127.0.0.1:$etcd_port --advertise-client-urls http://127.0.0.1:$etcd_port \\
  --listen-peer-urls http://127.0.0.1:$etcd_peer_port --initial-advertise-peer-urls http://127.0.0.1:$etcd_peer_port \\
  --initial-cluster quickstart=http://127.0.0.1:$etcd_peer_port
EOF
inside systemctl daemon-reload
echo "units: $(cd "$units" && echo *.service)"
echo "drop-ins: $(cd "$units" && echo *.d/*.conf)"

step "as an operator, before the start: a root shell (here the sandbox's), no environment, no --env-file"
op warden --version
op warden contract --app shop
op warden check --app mes-dashboard

step "start the apps (ExecStartPre=warden check passes) and their agents, warden@APP.service"
inside systemctl start quickstart-etcd.service mes-dashboard.service mes-dashboard-worker@1.service shop.service
inside systemctl start warden@mes-dashboard.service warden@shop.service
# Before any status: each agent active (Type=notify: it has reported READY=1 and owns its bus
# name), not merely activating.
wait_active() {
  local u st i
  for u in "$@"; do
    for i in $(seq 1 300); do
      st=$(inside systemctl is-active "$u" 2>/dev/null || true)
      [ "$st" = active ] && break
      [ "$st" = failed ] && { journal -u "$u" -n 20 -o cat >&2; die "$u failed"; }
      sleep 0.1
    done
    [ "$st" = active ] || { journal -u "$u" -n 20 -o cat >&2; die "$u is not active after 30 s ($st)"; }
  done
}
wait_active quickstart-etcd.service mes-dashboard.service shop.service warden@mes-dashboard.service warden@shop.service
for u in mes-dashboard.service shop.service warden@mes-dashboard.service warden@shop.service; do
  printf '%-30s %s\n' "$u" "$(inside systemctl show -p ActiveState -p SubState -p StatusText "$u" | sort | paste -sd ' ')"
done
echo "mes-dashboard's journal: $(journal -u mes-dashboard.service -o cat | grep 'warden check' | tail -n 1)"
echo "GET http://127.0.0.1:$port/      -> $(curl -sS "http://127.0.0.1:$port/")"
echo "GET http://127.0.0.1:$shop_port/ -> $(curl -sS "http://127.0.0.1:$shop_port/")"

step "as an operator, the apps running: every app at a glance, then one app's running contract"
op warden status --all
op warden check --app mes-dashboard --phase running

step "the docs against the deployed contract: warden check --docs (what CI runs)"
op warden check --app mes-dashboard --phase running --docs "${docs[0]}" --docs "${docs[1]}"

workers() { # APP -> its Gunicorn workers' PIDs, from its agent
  opq warden status --json --app "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(" ".join(str(w.get("pid", w) if isinstance(w, dict) else w) for w in d["gunicorn"]["workers"]))'
}

step "a restart flag, written as the MES admin API writes it -> a verified graceful reload"
shop_workers=$(workers shop)
echo "before: mes-dashboard $(curl -sS "http://127.0.0.1:$port/")"
echo "        workers: mes-dashboard $(workers mes-dashboard); shop $shop_workers"
inside sh -c 'printf "{\"user\": \"quickstart\", \"source\": \"manual\"}" > /run/mes-dashboard/.flag.tmp &&
  mv /run/mes-dashboard/.flag.tmp /run/mes-dashboard/mes_dashboard_restart.flag'
for _ in $(seq 1 150); do
  opq warden status --app mes-dashboard | grep -q 'last request: executed' && break
  sleep 0.2
done
op warden status --app mes-dashboard
echo "after:  mes-dashboard $(curl -sS "http://127.0.0.1:$port/")"
echo "        workers: mes-dashboard $(workers mes-dashboard); shop $(workers shop)"
[ "$(workers shop)" = "$shop_workers" ] || die "shop's workers changed with mes-dashboard's reload"
echo "shop's workers are the same: its agent was not involved"
echo "journal: $(journal -u warden@mes-dashboard.service -o cat | grep 'restart executed' | tail -n 1)"

step "the fleet group: the reload took the group's one slot and gave it back once verified"
journal -u warden@mes-dashboard.service -o cat | grep 'fleet slot' | tail -n 2
op warden fleet status --app mes-dashboard

step "warden restart within the cooldown: refused (exit 3)"
code=0; op warden restart --app mes-dashboard --reason "quickstart, again" || code=$?
echo "exit code $code"
[ "$code" = 3 ] || die "expected exit 3 (cooldown), got $code"

step "kill-switch on: published for the app, one reload the policy does not block"
op warden kill-switch on --app mes-dashboard --reason "quickstart: feature off"
echo "the app now says: $(curl -sS "http://127.0.0.1:$port/")"
op warden kill-switch --app mes-dashboard
step "kill-switch off"
op warden kill-switch off --app mes-dashboard --reason "quickstart: feature back"
echo "the app now says: $(curl -sS "http://127.0.0.1:$port/")"

step "drift: a drop-in moves the worker to the system Python; the app's restart is refused"
worker_exec /usr/bin/python3
inside systemctl daemon-reload
if op systemctl restart mes-dashboard.service; then
  die "the restart should have been refused"
fi
echo "mes-dashboard.service: $(inside systemctl show -p ActiveState -p SubState -p Result mes-dashboard.service | sort | paste -sd ' ') (Restart=on-failure: it tries again, and is refused again)"
echo "warden@mes-dashboard.service: $(inside systemctl is-active warden@mes-dashboard.service || true) (it requires its app)"
echo "its journal:"
journal -u mes-dashboard.service -o cat | grep -A1 'error\[' | tail -n 2
echo "shop.service: $(inside systemctl is-active shop.service), warden@shop.service: $(inside systemctl is-active warden@shop.service) (untouched)"

step "fixed again: the app and its agent start"
worker_exec "$mes_prefix/bin/python"
inside systemctl daemon-reload
op systemctl restart mes-dashboard.service
op systemctl start warden@mes-dashboard.service
wait_active mes-dashboard.service warden@mes-dashboard.service
echo "mes-dashboard.service: $(inside systemctl is-active mes-dashboard.service), warden@mes-dashboard.service: $(inside systemctl is-active warden@mes-dashboard.service)"

step "warden rehearse --rollback-drill: reload, verified from outside, then the kill-switch on and off"
# The agent restarted with the history of the first reload, whose cooldown may still run: the
# rehearsal's reload is an acknowledged override, as the runbook's rehearsal is.
op warden rehearse --app mes-dashboard --health-url "http://127.0.0.1:$port/health" \
  --override --acknowledge --reason "quickstart rehearsal" --rollback-drill --target-seconds 30
echo "the app now says: $(curl -sS "http://127.0.0.1:$port/")"
op warden kill-switch --app mes-dashboard

step "probes and automatic recovery (a dry run): the app's health, the breaker, the recommendation"
op warden recovery --app mes-dashboard
opq warden recovery --app mes-dashboard | grep -q 'breaker: closed' || die "the breaker should be closed"

step "the other app: warden restart --app shop, verified; mes-dashboard's workers untouched"
[ "$(workers shop)" = "$shop_workers" ] || die "shop's workers changed with mes-dashboard's reloads"
echo "shop's workers, unchanged since the start: $shop_workers"
mes_workers=$(workers mes-dashboard)
op warden restart --app shop --reason "deploy shop 2.1"
echo "workers: shop $shop_workers -> $(workers shop); mes-dashboard $mes_workers -> $(workers mes-dashboard)"
[ "$(workers mes-dashboard)" = "$mes_workers" ] || die "mes-dashboard's workers changed with shop's reload"
[ "$(workers shop)" != "$shop_workers" ] || die "shop's workers did not change"
op warden status --all

step "done in $((SECONDS - t0)) s"
cat <<EOF
Shown, with warden from $what:
  - two apps, mes-dashboard and shop, each watched by its own agent (warden@APP.service, the
    shipped template; the contract in /etc/warden/APP.env, the app's user in a drop-in);
  - warden typed as an operator types it: no --env-file, --app names the app (status --all
    lists both);
  - a restart flag -> a verified graceful reload; the cooldown refusing the next (exit 3);
  - the kill-switch on and off, seen by the app's new workers;
  - a drifted worker unit refused at the app's start (ExecStartPre=warden check);
  - warden rehearse --rollback-drill passing;
  - the agent's probes of mes-dashboard's health, automatic recovery in a dry run (warden
    recovery);
  - each app's reloads leaving the other app's workers alone;
  - both apps in one fleet group (etcd on loopback): a reload takes the group's one slot and
    gives it back once verified (warden fleet status).
EOF
if $keep; then
  cat <<EOF

The deployment is up (--keep). An operator's root shell inside it:
  sudo examples/$self --shell
(or one command: echo 'warden status --all' | sudo examples/$self --shell)
The apps answer on http://127.0.0.1:$port/ and http://127.0.0.1:$shop_port/.
Tear it down and remove its files: sudo examples/$self --down
EOF
fi
