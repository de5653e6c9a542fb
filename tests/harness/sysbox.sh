#!/usr/bin/env bash
# sysbox.sh — boots the machine's own systemd as PID 1 of private pid/mount/uts/ipc/cgroup
# namespaces, with its own D-Bus system bus and journald, for warden's integration tests and
# its quick start. Root only; the host is left untouched (its / is mounted read-only inside).
#
#   sysbox.sh up        boot; prints shell exports (SYSBOX_DIR, SYSBOX_PID, DBUS_SYSTEM_BUS_ADDRESS)
#   sysbox.sh run CMD…  run CMD inside the sandbox's namespaces (systemctl, journalctl, kill…)
#   sysbox.sh journal … journalctl over the sandbox's journal (also after `down`)
#   sysbox.sh down      power off (graceful, then SIGKILL and cgroup.kill); keeps the journal
#
# Environment:
#   SYSBOX_DIR    state directory, one per sandbox (default /tmp/warden-sysbox)
#   SYSBOX_BINDS  space-separated host directories that stay writable inside (same path)
#   SYSBOX_DBUS_POLICY  space-separated D-Bus policy files installed for the sandbox's system
#                 bus (beside the host's /etc/dbus-1/system.d, which stays untouched)
#   SYSBOX_ETC    a host directory whose contents are laid over /etc inside (e.g. warden/APP.env)
#   SYSBOX_GROUPS space-separated groups added to /etc/group inside when the host lacks them
#
# /etc is the host's, copy-on-write (an overlay whose upper layer is $SYSBOX_DIR/etc-upper):
# what is written there inside stays in the sandbox.
# Inside: / is the host's root read-only; /tmp is the host's /tmp (read-write, same paths);
# /run is $SYSBOX_DIR/run (visible from the host: bus socket, units, runtime dirs);
# /etc/systemd/system holds only the minimal units linked here; put test units in
# /run/systemd/system ($SYSBOX_DIR/run/systemd/system) and reload.
set -euo pipefail

DIR=${SYSBOX_DIR:-/tmp/warden-sysbox}
BUS="unix:path=$DIR/run/dbus/system_bus_socket"
UNIT_PATH=/run/systemd/system.control:/run/systemd/transient:/etc/systemd/system:/run/systemd/system

fail() { echo "sysbox: $*" >&2; exit 1; }

cgroup_root() {
  local d
  for d in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    [ "$(stat -fc %T "$d" 2>/dev/null)" = cgroup2fs ] && { echo "$d"; return; }
  done
  fail "no cgroup2 hierarchy mounted"
}

# Host PID of the sandbox's PID 1: the only child of the unshare process.
init_pid() {
  local u
  u=$(cat "$DIR/unshare.pid" 2>/dev/null) || return 1
  kill -0 "$u" 2>/dev/null || return 1
  tr -d ' \n' < "/proc/$u/task/$u/children"
}

# The smallest unit set that gives a running system with D-Bus and journald.
link_units() {
  local u
  mkdir -p "$DIR/units" "$DIR/run/systemd/system" "$DIR/run/systemd/system.conf.d"
  for u in sysinit.target basic.target sockets.target paths.target timers.target \
           slices.target local-fs.target swap.target shutdown.target umount.target \
           final.target poweroff.target systemd-poweroff.service exit.target \
           systemd-exit.service halt.target systemd-halt.service \
           dbus.socket dbus.service systemd-journald.service systemd-journald.socket \
           systemd-journald-dev-log.socket; do
    ln -sf "/lib/systemd/system/$u" "$DIR/units/$u"
  done
  # The audit socket would listen on the host's audit netlink.
  ln -sf /dev/null "$DIR/units/systemd-journald-audit.socket"
  printf '%s\n' '[Unit]' 'Description=warden test sandbox' \
    'Requires=basic.target dbus.socket dbus.service' \
    'Wants=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service' \
    'After=basic.target dbus.socket dbus.service systemd-journald.service' \
    'AllowIsolate=yes' > "$DIR/units/sysbox.target"
  printf '%s\n' '[Manager]' 'LogTarget=journal-or-kmsg' 'ShowStatus=no' \
    'DefaultTimeoutStartSec=30s' 'DefaultTimeoutStopSec=5s' \
    > "$DIR/run/systemd/system.conf.d/50-sysbox.conf"
}

# Runs as PID 1 of the new namespaces: lays out the mounts, then execs systemd.
stage2() {
  local dir=$1 cg=$2 dev=$1/dev t
  mount --make-rprivate /
  mount -t tmpfs -o mode=755,nosuid,size=4m sysbox-dev "$dev"
  mknod -m 666 "$dev/null" c 1 3;   mknod -m 666 "$dev/zero" c 1 5
  mknod -m 666 "$dev/full" c 1 7;   mknod -m 666 "$dev/random" c 1 8
  mknod -m 666 "$dev/urandom" c 1 9; mknod -m 666 "$dev/tty" c 5 0
  mkdir "$dev/pts" "$dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$dev/pts"
  ln -s pts/ptmx "$dev/ptmx"
  mount -t tmpfs -o mode=1777,nosuid,nodev shm "$dev/shm"
  ln -s /proc/self/fd "$dev/fd"
  ln -s /proc/self/fd/0 "$dev/stdin"; ln -s /proc/self/fd/1 "$dev/stdout"; ln -s /proc/self/fd/2 "$dev/stderr"
  # script(1) gives us a pty: it becomes the console, copied to console.log.
  if tty -s; then touch "$dev/console"; mount --bind "$(tty)" "$dev/console"; fi
  mount --move "$dev" /dev
  # Writable binds are made before / turns read-only, so they stay writable. They are staged
  # first and moved into place after the private tmpfs mounts, so that a bind below /var/tmp
  # (say) is not hidden by the tmpfs mounted over it.
  mount --bind /tmp /tmp
  # Before the binds below /etc, which go on top of it.
  mount -t overlay sysbox-etc -o "lowerdir=/etc,upperdir=$dir/etc-upper,workdir=$dir/etc-work" /etc
  local i=0 staged=()
  for t in ${SYSBOX_BINDS:-}; do
    mkdir -p "$dir/stage/$i"; mount --bind "$t" "$dir/stage/$i"; staged+=("$t"); i=$((i + 1))
  done
  mount --bind "$dir/run" /run
  mount --bind "$dir/units" /etc/systemd/system
  for t in /var/tmp /var/log /var/cache /var/lib/systemd /var/lib/private; do
    [ -d "$t" ] && mount -t tmpfs -o mode=755,nosuid,nodev sysbox-tmp "$t"
  done
  chmod 1777 /var/tmp
  i=0
  for t in ${staged[@]+"${staged[@]}"}; do
    mkdir -p "$t" 2>/dev/null || true
    mount --move "$dir/stage/$i" "$t"; i=$((i + 1))
  done
  [ -d "$dir/dbus.d" ] && mount --bind "$dir/dbus.d" /etc/dbus-1/system.d
  mount -o remount,bind,ro /
  # Kernel-wide knobs stay read-only: systemd would otherwise tune them for the whole host.
  mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys
  [ -e /proc/sysrq-trigger ] && { mount --bind /proc/sysrq-trigger /proc/sysrq-trigger; mount -o remount,bind,ro /proc/sysrq-trigger; }
  # Move into our own cgroup, then a cgroup namespace rooted there with only cgroup2 visible.
  echo 0 > "$cg/cgroup.procs"
  exec unshare --cgroup /bin/sh -c '
    umount -R /sys/fs/cgroup 2>/dev/null || umount -l /sys/fs/cgroup 2>/dev/null || true
    mount -o remount,bind,ro /sys && mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 1
    exec env -i container=warden-sysbox PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      SYSTEMD_UNIT_PATH='"$UNIT_PATH"' \
      SYSTEMD_GENERATOR_PATH=/run/sysbox/none SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/sysbox/none \
      /lib/systemd/systemd --system --unit=sysbox.target systemd.journald.forward_to_console=1'
}

# The upper layer of the sandbox's /etc: SYSBOX_ETC's files, the groups of SYSBOX_GROUPS, and
# the files the host has mounted below /etc (an overlay shows what is under a mount point).
etc_layer() {
  local g gid m
  grep -qw overlay /proc/filesystems || fail "the kernel has no overlay file system (for /etc inside)"
  mkdir -p "$DIR/etc-upper" "$DIR/etc-work"
  [ -n "${SYSBOX_ETC:-}" ] && cp -a "$SYSBOX_ETC/." "$DIR/etc-upper/"
  awk '$5 ~ "^/etc/" {print $5}' /proc/self/mountinfo | while read -r m; do
    [ -f "$m" ] && { mkdir -p "$(dirname "$DIR/etc-upper${m#/etc}")"; cp -a "$m" "$DIR/etc-upper${m#/etc}"; }
  done
  for g in ${SYSBOX_GROUPS:-}; do
    getent group "$g" >/dev/null && continue
    [ -f "$DIR/etc-upper/group" ] || cp -a /etc/group "$DIR/etc-upper/group"
    gid=$(awk -F: 'BEGIN { g = 990 } { used[$3] = 1 } END { while (used[g]) g--; print g }' "$DIR/etc-upper/group")
    echo "$g:x:$gid:" >> "$DIR/etc-upper/group"
  done
}

state() {
  busctl --address="$BUS" get-property org.freedesktop.systemd1 /org/freedesktop/systemd1 \
    org.freedesktop.systemd1.Manager SystemState 2>/dev/null | awk '{gsub(/"/, "", $2); print $2}'
}

up() {
  [ "$(id -u)" = 0 ] || fail "must run as root"
  init_pid >/dev/null 2>&1 && fail "already up in $DIR; run: $0 down"
  command -v script >/dev/null || fail "script(1) is missing (apt-get install bsdutils)"
  local cg self i st=""
  cg="$(cgroup_root)/warden-sysbox-$(basename "$DIR")"; self=$(readlink -f "$0")
  rm -rf "$DIR"; mkdir -p "$DIR/run" "$DIR/units" "$DIR/dev"
  link_units
  etc_layer
  if [ -n "${SYSBOX_DBUS_POLICY:-}" ] && [ -d /etc/dbus-1/system.d ]; then
    mkdir -p "$DIR/dbus.d"
    cp -a /etc/dbus-1/system.d/. "$DIR/dbus.d/"
    # shellcheck disable=SC2086
    cp $SYSBOX_DBUS_POLICY "$DIR/dbus.d/"
  fi
  mkdir -p "$cg"; echo "$cg" > "$DIR/cgroup"
  cat > "$DIR/launch" <<EOF
#!/bin/sh
echo \$\$ > "$DIR/unshare.pid"
export LIBMOUNT_UTAB="$DIR/utab"
exec unshare --pid --mount --uts --ipc --fork --kill-child --mount-proc --propagation private "$self" __stage2 "$DIR" "$cg"
EOF
  chmod +x "$DIR/launch"
  setsid script -qfec "$DIR/launch" "$DIR/console.log" </dev/null >/dev/null 2>&1 &
  echo $! > "$DIR/script.pid"
  # Boot takes a few hundred milliseconds; wait for the manager to report the system up.
  for i in $(seq 1 300); do
    if [ -S "$DIR/run/dbus/system_bus_socket" ]; then
      st=$(state || true)
      case "$st" in running|degraded) break ;; esac
    fi
    kill -0 "$(cat "$DIR/script.pid")" 2>/dev/null || { cat "$DIR/console.log" >&2; fail "the sandbox died while booting"; }
    sleep 0.1
  done
  case "$st" in
    running|degraded) ;;
    *) cat "$DIR/console.log" >&2; down; fail "boot timed out" ;;
  esac
  printf 'export SYSBOX_DIR=%s\nexport SYSBOX_PID=%s\nexport DBUS_SYSTEM_BUS_ADDRESS=%s\n' \
    "$DIR" "$(init_pid)" "$BUS" | tee "$DIR/env"
}

run_inside() {
  local p; p=$(init_pid) || fail "not running ($DIR)"
  SYSTEMD_UNIT_PATH=$UNIT_PATH exec nsenter -t "$p" -m -p -u -i -C -- "$@"
}

down() {
  local u cg p i
  u=$(cat "$DIR/unshare.pid" 2>/dev/null || true)
  if [ -n "$u" ] && kill -0 "$u" 2>/dev/null; then
    busctl --timeout=5 --address="$BUS" call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
      org.freedesktop.systemd1.Manager StartUnit ss poweroff.target replace-irreversibly >/dev/null 2>&1 || true
    for i in $(seq 1 100); do kill -0 "$u" 2>/dev/null || break; sleep 0.1; done
    # unshare --kill-child takes PID 1, and with it the whole pid namespace.
    kill -0 "$u" 2>/dev/null && kill -KILL "$u" 2>/dev/null || true
  fi
  cg=$(cat "$DIR/cgroup" 2>/dev/null || true)
  if [ -n "$cg" ] && [ -d "$cg" ]; then
    [ -e "$cg/cgroup.kill" ] && { echo 1 > "$cg/cgroup.kill" 2>/dev/null || true; }
    for i in $(seq 1 50); do grep -q '^populated 0' "$cg/cgroup.events" && break; sleep 0.1; done
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$cg" ] && echo "sysbox: could not remove $cg" >&2
  fi
  p=$(cat "$DIR/script.pid" 2>/dev/null || true)
  if [ -n "$p" ]; then for i in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; fi
  rm -f "$DIR/unshare.pid" "$DIR/script.pid"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  run) shift; run_inside "$@" ;;
  journal) shift; exec journalctl -D "$DIR/run/log/journal" --no-pager "$@" ;;
  pid) init_pid ;;
  __stage2) shift; stage2 "$@" ;;
  *) echo "usage: $0 up|down|run CMD…|journal [ARGS…]|pid" >&2; exit 2 ;;
esac
