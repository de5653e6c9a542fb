#!/usr/bin/env bash
# Builds the release bundle in dist/warden-VERSION/ (or --out DIR):
#   warden-VERSION-ARCH-linux.tar.gz   binary, the agent's template warden@.service, D-Bus policy,
#                                      tmpfiles/sysusers, man pages, completions, README, RUNBOOK,
#                                      MIGRATION, copyright, example units, alert rules (a /usr tree)
#   warden_VERSION-1_amd64.deb         the Debian package (packaging/build-deb.sh)
#   warden-VERSION.spdx.json           SPDX 2.3 SBOM of the dependency graph (packaging/sbom.py)
#   SHA256SUMS, SHA256SUMS.sig         checksums, signed with `ssh-keygen -Y sign -n file`
#
# The signing key is the maintainer's and never in the repository: --key PATH or
# WARDEN_SIGNING_KEY. --ephemeral-key signs with a throwaway key instead (CI: proves the
# pipeline, not the publisher) and writes its allowed_signers.ephemeral into the bundle.
#
# Reproducible: SOURCE_DATE_EPOCH (default: the last commit's date) fixes every time stamp.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly IDENTITY="release@warden"
readonly NAMESPACE="file"

usage() {
    cat <<EOF
usage: packaging/release.sh [--key PATH | --ephemeral-key] [--out DIR]

  --key PATH        the maintainer's SSH signing key (default: \$WARDEN_SIGNING_KEY)
  --ephemeral-key   sign with a throwaway ed25519 key (CI only: proves the pipeline)
  --out DIR         where to write the bundle (default: dist/warden-VERSION)
EOF
}

die() {
    printf 'release: error: %s\n  help: %s\n' "$1" "$2" >&2
    exit 1
}

key=${WARDEN_SIGNING_KEY:-}
ephemeral=false
out=
while (($#)); do
    case $1 in
    --key)
        [[ $# -ge 2 ]] || die "--key needs a path" "packaging/release.sh --key ~/.ssh/warden_release"
        key=$2
        shift 2
        ;;
    --ephemeral-key)
        ephemeral=true
        shift
        ;;
    --out)
        [[ $# -ge 2 ]] || die "--out needs a directory" "packaging/release.sh --out /tmp/bundle"
        out=$2
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown argument: $1" "see the usage above"
        ;;
    esac
done

if $ephemeral && [[ -n $key ]]; then
    die "both a signing key and --ephemeral-key were given" \
        "drop one (WARDEN_SIGNING_KEY counts as a key)"
fi
if ! $ephemeral; then
    [[ -n $key ]] || die "no signing key" \
        "pass --key PATH (or set WARDEN_SIGNING_KEY) with the maintainer's key; for a CI run that only tests the pipeline, --ephemeral-key"
    [[ -r $key ]] || die "cannot read the signing key $key" "check the path and its permissions"
fi
for tool in ssh-keygen sha256sum tar gzip python3; do
    command -v "$tool" >/dev/null || die "$tool not found" "apt-get install openssh-client coreutils tar gzip python3"
done

if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The .deb first: it builds the release binary and generates the man pages and completions
# that the tarball ships too.
deb=$(bash packaging/build-deb.sh | tail -n 1)

read -r target_dir version < <(
    cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "warden")
print(m["target_directory"], p["version"])
'
)
[[ -n ${version:-} ]] || die "cannot read the version from Cargo.toml" "run 'cargo metadata --no-deps --locked'"
arch=$(uname -m)
out=${out:-dist/warden-$version}
tarball="warden-$version-$arch-linux.tar.gz"
sbom="warden-$version.spdx.json"
deb_name=$(basename "$deb")

mkdir -p "$out" || die "cannot create $out" "choose a writable directory with --out"
[[ -w $out ]] || die "$out is not writable" "choose a writable directory with --out"
# Only this script's own files are replaced; anything else in the directory is left alone.
rm -f "$out/$tarball" "$out/$sbom" "$out/$deb_name" "$out/SHA256SUMS" "$out/SHA256SUMS.sig" \
    "$out/allowed_signers.ephemeral"

# The tarball is a /usr tree: `tar -xzf … -C /usr/local --strip-components=1` installs it.
assets="$target_dir/release/assets"
root="$tmp/warden-$version-$arch-linux"
install -D -m 0755 "$target_dir/release/warden" "$root/bin/warden"
install -D -m 0644 -t "$root/share/man/man1" "$assets"/man/*.1.gz
install -D -m 0644 "$assets/completions/warden.bash" "$root/share/bash-completion/completions/warden"
install -D -m 0644 "$assets/completions/_warden" "$root/share/zsh/vendor-completions/_warden"
install -D -m 0644 "$assets/completions/warden.fish" "$root/share/fish/vendor_completions.d/warden.fish"
# The agent is a template, one instance per app: warden@APP.service (docs/MIGRATION.md).
install -D -m 0644 systemd/warden@.service "$root/lib/systemd/system/warden@.service"
install -D -m 0644 systemd/warden.tmpfiles.conf "$root/lib/tmpfiles.d/warden.conf"
install -D -m 0644 systemd/warden.sysusers.conf "$root/lib/sysusers.d/warden.conf"
install -D -m 0644 systemd/io.warden.Agent.conf "$root/share/dbus-1/system.d/io.warden.Agent.conf"
install -D -m 0644 -t "$root/share/doc/warden" README.md docs/RUNBOOK.md docs/MIGRATION.md \
    packaging/debian/copyright
install -D -m 0644 -t "$root/share/doc/warden/examples" \
    systemd/mes-dashboard.service systemd/mes-dashboard-worker@.service
install -D -m 0644 -t "$root/share/doc/warden/examples/prometheus" packaging/prometheus/warden-alerts.yml

# Deterministic: sorted entries, one fixed time, root ownership, no atime/ctime, gzip -n.
tar --sort=name --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --mode=u+rw,go-w,a+rX \
    -C "$tmp" -cf - "$(basename "$root")" | gzip -9n >"$out/$tarball"

cp "$deb" "$out/$deb_name"
python3 packaging/sbom.py --out "$out/$sbom"

(cd "$out" && sha256sum -- "$deb_name" "$sbom" "$tarball" >SHA256SUMS)

if $ephemeral; then
    key="$tmp/ephemeral_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C "$IDENTITY (ephemeral)" -f "$key"
    printf '%s namespaces="%s" %s\n' "$IDENTITY" "$NAMESPACE" \
        "$(cut -d' ' -f1,2 "$key.pub")" >"$out/allowed_signers.ephemeral"
fi
ssh-keygen -q -Y sign -f "$key" -n "$NAMESPACE" "$out/SHA256SUMS" ||
    die "signing failed" "check the key ($key) and its passphrase"
# The signature must at least be well formed before the bundle is called done.
ssh-keygen -q -Y check-novalidate -n "$NAMESPACE" -s "$out/SHA256SUMS.sig" <"$out/SHA256SUMS" >/dev/null

echo "release: bundle in $out:"
(cd "$out" && ls -l -- *)
if $ephemeral; then
    cat <<EOF

release: NOTE: signed with an EPHEMERAL key (allowed_signers.ephemeral). The signature only
  proves that this pipeline produced these files; it says nothing about who published them.
  Releases are signed with the maintainer's key: packaging/release.sh --key PATH.
EOF
fi
