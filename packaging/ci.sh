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
    /usr/lib/systemd/system/warden.service \
    /usr/share/dbus-1/system.d/io.warden.Agent.conf \
    /usr/lib/tmpfiles.d/warden.conf \
    /usr/lib/sysusers.d/warden.conf \
    /usr/share/bash-completion/completions/warden \
    /usr/share/zsh/vendor-completions/_warden \
    /usr/share/fish/vendor_completions.d/warden.fish \
    /usr/share/man/man1/warden.1.gz \
    /usr/share/man/man1/warden-check.1.gz \
    /usr/share/doc/warden/copyright \
    /usr/share/doc/warden/examples/mes-dashboard.service \
    /usr/share/doc/warden/examples/prometheus/warden-alerts.yml; do
    [[ -f $f ]] || die "the package did not install $f" "check the assets in Cargo.toml [package.metadata.deb]"
done
getent group warden-admin >/dev/null || die "the postinst did not create the group warden-admin" \
    "check that the package's postinst runs systemd-sysusers"
if command -v man >/dev/null; then
    man -w warden-check
fi
if command -v systemd-analyze >/dev/null; then
    # The agent requires the app unit, which the operator installs: that complaint is expected.
    if ! out=$(systemd-analyze verify /usr/lib/systemd/system/warden.service 2>&1); then
        if grep -v 'mes-dashboard.service' <<<"$out" | grep -q .; then
            echo "$out" >&2
            die "systemd-analyze verify finds fault with warden.service" "see its output above"
        fi
    fi
    echo "systemd-analyze verify warden.service: clean (but for the missing app unit)"
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
