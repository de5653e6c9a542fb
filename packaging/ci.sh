#!/usr/bin/env bash
# CI for the packages, on a fresh Debian 12 machine as root: installs the tools, builds the
# .deb, lints it (errors fail), installs it and checks what it put where, then builds a release
# bundle signed with an ephemeral key and verifies it, tamper test included.
#
# The package stays installed: the rehearsal that follows runs against the installed units.
# Honours CARGO_TARGET_DIR. Prints the time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly VENV=/var/tmp/warden-venv-spdx
# Pinned: the packaging relies on their behaviour (cargo-deb's systemd-units scripts, the
# validator's SPDX 2.3 rules).
readonly CARGO_DEB_VERSION="^3.8"
readonly SPDX_TOOLS_VERSION="0.8.5"

die() {
    printf 'packaging ci: error: %s\n  help: %s\n' "$1" "$2" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages)" "sudo bash packaging/ci.sh"

timings=()
step_start=$SECONDS
step() {
    printf '\n=== %s\n' "$1"
    step_start=$SECONDS
}
done_step() {
    timings+=("$(printf '%4d s  %s' $((SECONDS - step_start)) "$1")")
}
t0=$SECONDS

step "tools: apt packages, cargo-deb (in the background), the SPDX validator"
apt_wanted=(lintian python3-venv openssh-client binutils)
apt_missing=()
for p in "${apt_wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || apt_missing+=("$p")
done
if ((${#apt_missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
# cargo-deb compiles for minutes, mostly on one core at the end; the release build needs the
# other: run them side by side.
# Its own target dir: sharing CARGO_TARGET_DIR would serialise the two on cargo's lock.
cargo_deb_pid=
if ! cargo deb --version >/dev/null 2>&1; then
    cargo_deb_target=$(mktemp -d)
    CARGO_TARGET_DIR=$cargo_deb_target cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" \
        >/tmp/warden-ci-cargo-deb.log 2>&1 &
    cargo_deb_pid=$!
fi
if [[ ! -x $VENV/bin/pyspdxtools ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "spdx-tools==$SPDX_TOOLS_VERSION"
fi
export PYSPDXTOOLS=$VENV/bin/pyspdxtools
done_step "tools (apt: ${apt_missing[*]:-none missing})"

step "release build"
cargo build --release --locked
if [[ -n $cargo_deb_pid ]]; then
    wait "$cargo_deb_pid" || {
        tail -n 30 /tmp/warden-ci-cargo-deb.log >&2
        die "cargo install cargo-deb failed" "see the log above"
    }
    rm -rf "$cargo_deb_target"
fi
cargo deb --version
done_step "release build (with cargo-deb's install alongside)"

step "build the .deb"
deb=$(bash packaging/build-deb.sh | tail -n 1)
echo "$deb ($(stat -c %s "$deb") bytes)"
done_step "build the .deb"

step "lintian"
lintian_rc=0
lintian --fail-on error --display-info "$deb" >/tmp/warden-ci-lintian.log 2>&1 || lintian_rc=$?
grep -v 'running with root privileges' /tmp/warden-ci-lintian.log || true
((lintian_rc == 0)) || die "lintian reports errors" "see its output above"
done_step "lintian"

step "install the .deb and check it"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall "$(realpath "$deb")" >/dev/null
version=$(dpkg-query -W -f='${Version}' warden)
/usr/bin/warden --version | grep -qx "warden ${version%-*}" ||
    die "/usr/bin/warden --version does not say ${version%-*}" "is another warden first in the way?"
/usr/bin/warden --version
for f in \
    /usr/lib/systemd/system/warden@.service \
    /usr/share/dbus-1/system.d/io.warden.Agent.conf \
    /usr/lib/tmpfiles.d/warden.conf \
    /usr/lib/sysusers.d/warden.conf \
    /usr/share/bash-completion/completions/warden \
    /usr/share/zsh/vendor-completions/_warden \
    /usr/share/fish/vendor_completions.d/warden.fish \
    /usr/share/man/man1/warden.1.gz \
    /usr/share/man/man1/warden-check.1.gz \
    /usr/share/doc/warden/copyright \
    /usr/share/doc/warden/README.md \
    /usr/share/doc/warden/RUNBOOK.md \
    /usr/share/doc/warden/MIGRATION.md \
    /usr/share/doc/warden/examples/mes-dashboard.service \
    /usr/share/doc/warden/examples/mes-dashboard-worker@.service \
    /usr/share/doc/warden/examples/prometheus/warden-alerts.yml; do
    [[ -f $f ]] || die "the package did not install $f" "check the assets in Cargo.toml [package.metadata.deb]"
done
# One agent per app: the template only. (An upgrade from a package that shipped it removes it.)
if dpkg -L warden | grep -qx /usr/lib/systemd/system/warden.service; then
    die "the package still ships /usr/lib/systemd/system/warden.service" \
        "the agent is the template warden@.service: drop warden.service from packaging and systemd/"
fi
for g in warden warden-admin; do
    getent group "$g" >/dev/null || die "the postinst did not create the group $g" \
        "check that the package's postinst runs systemd-sysusers (Cargo.toml: the systemd-units table)"
done
# The package never enables or starts an agent: the operator enables each warden@APP.service
# once its contract, /etc/warden/APP.env, is written. An upgrade restarts the agents that run
# (try-restart), a removal stops them.
for s in postinst prerm postrm; do
    f=/var/lib/dpkg/info/warden.$s
    [[ -f $f ]] || continue
    if grep -nE 'deb-systemd-invoke|systemctl[^|#]* (start|enable|restart) ' "$f"; then
        die "the package's $s enables or starts a warden unit (above)" \
            "the template must be installed only: check packaging/debian/$s and Cargo.toml's systemd-units table"
    fi
done
grep -q "systemctl try-restart 'warden@\*.service'" /var/lib/dpkg/info/warden.postinst ||
    die "the package's postinst does not restart the running agents on an upgrade" "see packaging/debian/postinst"
grep -q "systemctl stop 'warden@\*.service'" /var/lib/dpkg/info/warden.prerm ||
    die "the package's prerm does not stop the agents on removal" "see packaging/debian/prerm"
grep -q systemd-sysusers /var/lib/dpkg/info/warden.postinst ||
    die "the package's postinst does not run systemd-sysusers" "check Cargo.toml's systemd-units table"
if command -v man >/dev/null; then
    man -w warden-check
fi
if command -v systemd-analyze >/dev/null; then
    # An instance of the installed template, as an operator gets it: warden@mes-dashboard.service
    # beside the example app unit it requires. The example's paths (/opt/…) are not on this
    # machine: complaints about mes-dashboard.service itself are expected, none about the agent.
    units=$(mktemp -d)
    ln -s /usr/lib/systemd/system/warden@.service "$units/warden@mes-dashboard.service"
    cp /usr/share/doc/warden/examples/mes-dashboard.service "$units/"
    verify_rc=0
    out=$(SYSTEMD_UNIT_PATH="$units:" systemd-analyze verify --man=no \
        "$units/warden@mes-dashboard.service" 2>&1) || verify_rc=$?
    rm -rf "$units"
    if grep -vE '(^|/)mes-dashboard\.service:' <<<"$out" | grep -q . || { [[ $verify_rc != 0 ]] && [[ -z $out ]]; }; then
        echo "$out" >&2
        die "systemd-analyze verify finds fault with warden@mes-dashboard.service" "see its output above"
    fi
    if [[ -n $out ]]; then
        printf '%s\n' "$out" | sed 's/^/  (the example app unit, expected) /'
        echo "systemd-analyze verify warden@mes-dashboard.service (the installed template): clean but for the example app unit's paths"
    else
        echo "systemd-analyze verify warden@mes-dashboard.service (the installed template): clean"
    fi
fi
done_step "install the .deb and check it"

step "release bundle (ephemeral key)"
bash packaging/release.sh --ephemeral-key
bundle=dist/warden-${version%-*}
done_step "release bundle"

step "verify the bundle"
bash packaging/verify.sh "$bundle" "$bundle/allowed_signers.ephemeral" --tamper-test
done_step "verify the bundle"

printf '\n=== packaging ci: timings\n'
printf '%s\n' "${timings[@]}"
echo "packaging ci: done in $((SECONDS - t0)) s"
