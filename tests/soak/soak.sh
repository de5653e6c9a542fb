#!/usr/bin/env bash
# soak.sh — warden under sustained control traffic, for SOAK_MINUTES (default 30), with the
# layout of examples/quickstart.sh: a conda-like prefix with Gunicorn from PyPI, the machine's
# own systemd booted in private namespaces (tests/harness/sysbox.sh, root only, the host
# untouched), the contract in the sandbox's /etc/warden/mes-dashboard.env, and the shipped units
# (systemd/mes-dashboard.service, and the hardened agent warden@mes-dashboard.service from the
# template systemd/warden@.service) linked in, with drop-ins for this machine. The agent's
# drop-in adds WatchdogSec=$SOAK_WATCHDOG_SEC (default 2) to the shipped hardening.
#
# Load, all at once:
#   - a restart request every SOAK_RESTART_EVERY s (default 4), alternately a flag written as the
#     MES admin API writes it and `warden restart` over D-Bus; every fifth is followed at once by
#     another, which the cooldown blocks (exit 3). WORKER_RESTART_COOLDOWN=1 and guarded mode
#     off, so the others execute;
#   - `warden status` (and every fourth `--json`) SOAK_STATUS_PER_SEC times a second (default 5);
#   - a kill-switch flip (on, off, …) every SOAK_FLIP_EVERY s (default 30).
# Every SOAK_SAMPLE_EVERY s (default 10), from systemd and /proc (the agent's host PID found
# through its unit's cgroup): the agent's MainPID, NRestarts, ActiveState, open fds, VmRSS,
# RssAnon, threads, systemd's WatchdogTimestamp (updated at each WATCHDOG=1 it receives) and
# the agent's own warden_watchdog_pings_total; written to SOAK_OUT (default /tmp/warden-soak.csv).
#
# The restart history grows by design until the policy's window (WORKER_RESTART_WINDOW_SECONDS,
# 600 s) is full: the executed restarts it counts are kept. The summary also gives RssAnon once
# that is so (t >= 600 s), beside the figure after the warm-up.
#
# Fails (exit 1) when: the fd count grew (last > first + 2); RSS grew more than 1 MiB from the
# first sample after the warm-up (120 s, or a third of a run shorter than 6 minutes) to the
# last; systemd restarted or replaced the agent (NRestarts > 0, another MainPID, a "Watchdog
# timeout" in its journal); systemd's watchdog timestamp did not advance between two samples or
# was ever older than 2 × WatchdogSec; or a control command failed (a status, a flip, a restart
# answered other than 0 or 3).
#
#   sudo tests/soak/soak.sh                  30 minutes
#   sudo SOAK_MINUTES=2 tests/soak/soak.sh   the smoke run
#
# SOAK_PORT (default 18090) is the app's port. The warden binary is built with cargo (release)
# and copied beside the fixture, so a rebuild during the run does not change what runs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "soak: run as root (it boots systemd in namespaces)" >&2; exit 1; }
minutes=${SOAK_MINUTES:-30}
out=${SOAK_OUT:-/tmp/warden-soak.csv}
port=${SOAK_PORT:-18090}
wd_sec=${SOAK_WATCHDOG_SEC:-2}
restart_every=${SOAK_RESTART_EVERY:-4}
status_per_sec=${SOAK_STATUS_PER_SEC:-5}
flip_every=${SOAK_FLIP_EVERY:-30}
sample_every=${SOAK_SAMPLE_EVERY:-10}
duration=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
[ "$duration" -ge 60 ] || { echo "soak: SOAK_MINUTES must be at least 1" >&2; exit 2; }
if [ "$duration" -ge 360 ]; then warmup=120; else warmup=$((duration / 3)); fi

base=/var/tmp/warden-soak
app=$repo/examples/gunicorn-app
export SYSBOX_DIR=/tmp/warden-soak-sysbox SYSBOX_BINDS=$base
export SYSBOX_DBUS_POLICY=$repo/systemd/io.warden.Agent.conf
# The contract, laid over the sandbox's /etc (the host's is not written), and the package's
# groups: the agent owns its bus name as a member of `warden`.
export SYSBOX_ETC=$base/etc SYSBOX_GROUPS="warden warden-admin"
# The host-side commands below find the contract as the agent does, by the app's name.
export WARDEN_CONFIG_DIR=$base/etc/warden
sysbox=$repo/tests/harness/sysbox.sh
inside() { bash "$sysbox" run "$@"; }
say() { printf 'soak: %s\n' "$*"; }
now_us() { date +%s%6N; }

say "dependencies, prefix and warden (release)"
bash "$repo/tests/harness/deps.sh" --for quickstart
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bash "$repo/tests/harness/make-prefix.sh" "$base/conda" mes-dashboard
prefix=$base/conda/envs/mes-dashboard
rm -rf "${base:?}/state" "${base:?}/etc" "${base:?}/bin" "${base:?}/counts"
mkdir -p "$base/etc/warden" "$base/state" "$base/bin" "$base/counts"
install -m 755 "$target/release/warden" "$base/bin/warden"
warden=$base/bin/warden
"$warden" --version
chown www-data:www-data "$base/state"
env_file=$base/etc/warden/mes-dashboard.env
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
WARDEN_KILL_SWITCH_FILE=/run/mes-dashboard/kill_switch.json
WARDEN_STATUS_FILE=/run/mes-dashboard/status.json
WARDEN_METRICS_SOCKET=/run/mes-dashboard/metrics.sock
WARDEN_HEALTH_URL=http://127.0.0.1:$port/health
WORKER_RESTART_COOLDOWN=1
WORKER_GUARDED_MODE_ENABLED=false
EOF
chown root:www-data "$env_file"; chmod 640 "$env_file"

say "boot the sandbox, install the shipped units with this machine's drop-ins"
bash "$sysbox" down >/dev/null 2>&1 || true
eval "$(bash "$sysbox" up)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  bash "$sysbox" down
}
trap cleanup EXIT
units=$SYSBOX_DIR/run/systemd/system
ln -sf "$repo/systemd/mes-dashboard.service" "$units/mes-dashboard.service"
ln -sf "$repo/systemd/warden@.service" "$units/warden@.service"
dropin() { mkdir -p "$units/$1.d"; cat > "$units/$1.d/$2.conf"; }
dropin mes-dashboard.service local <<EOF
[Service]
EnvironmentFile=
EnvironmentFile=/etc/warden/mes-dashboard.env
WorkingDirectory=$app
ExecStartPre=
ExecStartPre=$warden check
ExecStart=
ExecStart=$prefix/bin/gunicorn --pid \${WATCHDOG_PID_FILE} --bind \${GUNICORN_BIND} --workers 2 --no-control-socket --chdir $app app:app
EOF
# As the quick start: the app's user, the state below $base instead of StateDirectory= (the
# sandbox's /var/lib is read-only), PrivateTmp= off (it would hide $base, below /var/tmp).
# Restart=on-failure stays from the shipped unit: a watchdog kill would show as NRestarts.
dropin warden@mes-dashboard.service local <<EOF
[Service]
User=www-data
Group=www-data
ExecStartPre=
ExecStartPre=$warden check --phase running --app %i
ExecStart=
ExecStart=$warden run --app %i
StateDirectory=
ReadWritePaths=$base/state
PrivateTmp=no
WatchdogSec=$wd_sec
EOF
inside systemctl daemon-reload
inside systemctl start mes-dashboard.service warden@mes-dashboard.service
inside systemctl is-active warden@mes-dashboard.service >/dev/null
env=(--app mes-dashboard)
rt=$SYSBOX_DIR/run/mes-dashboard
"$warden" status "${env[@]}"

cg=$(cat "$SYSBOX_DIR/cgroup")/system.slice/system-warden.slice/warden@mes-dashboard.service
unit_path=/org/freedesktop/systemd1/unit/warden_40mes_2ddashboard_2eservice
prop() { # $1: interface suffix (Unit|Service), $2: property → the bare value
  busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.freedesktop.systemd1 "$unit_path" \
    "org.freedesktop.systemd1.$1" "$2" | awk '{ $1 = ""; sub(/^ /, ""); gsub(/"/, ""); print }'
}
host_pid() { # the host PID of the agent's MainPID (systemd reports it in the sandbox's pid ns)
  local ns=$1 p
  while read -r p; do
    [ "$(awk '/^NSpid:/ { print $NF }' "/proc/$p/status" 2>/dev/null)" = "$ns" ] && { echo "$p"; return 0; }
  done < "$cg/cgroup.procs"
  return 1
}
metric() { # the sum of a metric's samples whose line matches $1
  curl -sS --max-time 5 --unix-socket "$rt/metrics.sock" http://localhost/metrics |
    awk -v re="$1" '$0 ~ re && $0 !~ /^#/ { s += $NF } END { printf "%d", s }'
}
bump() { # a counter file in $base/counts
  local f=$base/counts/$1 n
  n=$(cat "$f" 2>/dev/null || echo 0); echo $((n + 1)) > "$f"
}
count() { cat "$base/counts/$1" 2>/dev/null || echo 0; }

main_pid0=$(prop Service MainPID)
say "agent MainPID $main_pid0 (host $(host_pid "$main_pid0")), WatchdogSec=$wd_sec; running ${minutes} min (warm-up ${warmup} s)"
t0=$(date +%s)
end=$((t0 + duration))

# Restart requests: a flag, then `warden restart`, …; every fifth one followed by a second at
# once, which the cooldown blocks.
restarts() {
  local i=0 code
  while [ "$(date +%s)" -lt "$end" ]; do
    i=$((i + 1))
    if [ $((i % 2)) = 1 ]; then
      printf '{"user": "soak", "source": "manual", "timestamp": "%s"}' "$(date -Is)" > "$rt/.soak-flag.tmp"
      mv "$rt/.soak-flag.tmp" "$rt/mes_dashboard_restart.flag"
      bump restart_flags
    else
      code=0; "$warden" restart --reason "soak $i" "${env[@]}" >/dev/null 2>&1 || code=$?
      bump "restart_exit_$code"
    fi
    if [ $((i % 5)) = 0 ]; then
      code=0; "$warden" restart --reason "soak $i, again" "${env[@]}" >/dev/null 2>&1 || code=$?
      bump "restart_exit_$code"
    fi
    sleep "$restart_every"
  done
}
statuses() {
  local i=0 pause json
  pause=$(awk -v n="$status_per_sec" 'BEGIN { printf "%.3f", 1 / n }')
  while [ "$(date +%s)" -lt "$end" ]; do
    i=$((i + 1))
    json=(); [ $((i % 4)) = 0 ] && json=(--json)
    if "$warden" status "${json[@]}" "${env[@]}" >/dev/null 2>&1; then
      bump status_ok
    else
      bump status_failed
    fi
    sleep "$pause"
  done
}
flips() {
  local i=0 verb next=$((t0 + flip_every))
  while [ "$(date +%s)" -lt "$end" ]; do
    if [ "$(date +%s)" -lt "$next" ]; then sleep 1; continue; fi
    next=$((next + flip_every))
    i=$((i + 1))
    if [ $((i % 2)) = 1 ]; then verb=on; else verb=off; fi
    if "$warden" kill-switch "$verb" --reason "soak flip $i" "${env[@]}" >/dev/null 2>&1; then
      bump flips_ok
    else
      bump flips_failed
    fi
  done
}
restarts & pids+=($!)
statuses & pids+=($!)
flips & pids+=($!)

echo "t_s,main_pid,n_restarts,active_state,fds,vmrss_kib,rssanon_kib,threads,watchdog_ts_us,watchdog_age_ms,agent_pings,restarts_executed,restarts_blocked,status_calls,flips" > "$out"
prev_ts=0
missed=0
replaced=0
while true; do
  now=$(date +%s)
  t=$((now - t0))
  main_pid=$(prop Service MainPID)
  n_restarts=$(prop Service NRestarts)
  active=$(prop Unit ActiveState)
  [ "$main_pid" = "$main_pid0" ] || replaced=$((replaced + 1))
  hp=$(host_pid "$main_pid" || echo 0)
  if [ "$hp" != 0 ]; then
    fds=$(find "/proc/$hp/fd" -mindepth 1 -maxdepth 1 | wc -l)
    read -r rss anon threads < <(awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^Threads:/ { t = $2 }
      END { print r, a, t }' "/proc/$hp/status")
  else
    fds=-1 rss=-1 anon=-1 threads=-1
  fi
  ts=$(prop Service WatchdogTimestamp)
  age_ms=$(( ($(now_us) - ts) / 1000 ))
  if [ "$ts" -le "$prev_ts" ] || [ "$age_ms" -gt $((2 * wd_sec * 1000)) ]; then
    missed=$((missed + 1))
    say "watchdog: timestamp $ts (previous $prev_ts), $age_ms ms old at t=${t}s"
  fi
  prev_ts=$ts
  pings=$(metric '^warden_watchdog_pings_total')
  executed=$(metric '^warden_restarts_total[{]decision="executed"')
  blocked=$(metric '^warden_restarts_total[{]decision="blocked"')
  echo "$t,$main_pid,$n_restarts,$active,$fds,$rss,$anon,$threads,$ts,$age_ms,$pings,$executed,$blocked,$(count status_ok),$(count flips_ok)" >> "$out"
  [ "$now" -lt "$end" ] || break
  sleep "$sample_every"
done
for p in "${pids[@]}"; do wait "$p" || true; done
pids=()

# The verdict.
inside journalctl --sync
timeouts=$(bash "$sysbox" journal -u warden@mes-dashboard.service -o cat | grep -c 'Watchdog timeout' || true)
summary=$(awk -F, -v warmup="$warmup" 'NR == 1 { next }
  { n++; t[n] = $1; fd[n] = $5; rss[n] = $6; anon[n] = $7
    if (n == 1 || $5 < fdmin) fdmin = $5; if ($5 > fdmax) fdmax = $5; if ($6 > rssmax) rssmax = $6
    if (!w && $1 >= warmup) { w = n }; if (!p && $1 >= 600) { p = n } }
  END { if (!w) w = n; if (!p) p = n
    printf "%d %d %d %d %d %d %d %d %d %d %d %d %d %d", n, fd[1], fd[n], fdmin, fdmax, rss[1], rss[w], rss[n], rssmax, anon[w], anon[n], t[w], anon[p], t[p] }' "$out")
read -r samples fd_first fd_last fd_min fd_max rss_first rss_warm rss_last rss_max anon_warm anon_last t_warm anon_window t_window <<< "$summary"
last=$(tail -n 1 "$out")
IFS=, read -r _ main_pid n_restarts active _ _ _ _ _ _ pings executed blocked _ _ <<< "$last"
restart_ok=$(count restart_exit_0); restart_blocked=$(count restart_exit_3)
restart_other=0
for f in "$base"/counts/restart_exit_*; do
  [ -e "$f" ] || continue
  case "$f" in */restart_exit_0|*/restart_exit_3) ;; *) restart_other=$((restart_other + $(cat "$f"))) ;; esac
done

cat <<EOF

== warden soak: $(( $(date +%s) - t0 )) s (${minutes} min), WatchdogSec=$wd_sec, samples $samples every ${sample_every} s → $out
restarts executed (agent's count)  $executed  (blocked $blocked); flags written $(count restart_flags), warden restart: $restart_ok verified, $restart_blocked refused by the cooldown (exit 3), $restart_other other
status calls                       $(count status_ok) ok, $(count status_failed) failed
kill-switch flips                  $(count flips_ok) ok, $(count flips_failed) failed
open fds                           first $fd_first, last $fd_last, min $fd_min, max $fd_max
RSS KiB                            first $rss_first, after warm-up (t=${t_warm}s) $rss_warm, last $rss_last, max $rss_max
RssAnon KiB                        after warm-up $anon_warm, once the policy window is full (t=${t_window}s) $anon_window, last $anon_last
agent                              MainPID $main_pid0 -> $main_pid, NRestarts $n_restarts, $active, watchdog pings sent $pings
watchdog (systemd's view)          timestamp missed/stale samples: $missed; "Watchdog timeout" in the journal: $timeouts
EOF

fail=()
[ "$fd_last" -le $((fd_first + 2)) ] || fail+=("fds grew: $fd_first -> $fd_last")
[ $((rss_last - rss_warm)) -le 1024 ] || fail+=("RSS grew $((rss_last - rss_warm)) KiB after the warm-up")
[ "$n_restarts" = 0 ] || fail+=("NRestarts=$n_restarts")
[ "$replaced" = 0 ] || fail+=("the agent's MainPID changed")
[ "$active" = active ] || fail+=("ActiveState=$active")
[ "$missed" = 0 ] || fail+=("the watchdog timestamp did not advance in time $missed time(s)")
[ "$timeouts" = 0 ] || fail+=("$timeouts watchdog timeout(s)")
[ "$(count status_failed)" = 0 ] || fail+=("$(count status_failed) status call(s) failed")
[ "$(count flips_failed)" = 0 ] || fail+=("$(count flips_failed) flip(s) failed")
[ "$restart_other" = 0 ] || fail+=("$restart_other restart(s) answered other than 0 or 3")
[ "$executed" -gt 0 ] || fail+=("no restart was executed")
if [ ${#fail[@]} -gt 0 ]; then
  printf 'soak: FAILED: %s\n' "${fail[@]}" >&2
  exit 1
fi
echo "soak: passed"
