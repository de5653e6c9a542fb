#!/usr/bin/env bash
# Builds the Debian package: the release binary, the assets it generates (man pages,
# completions), a changelog, then `cargo deb`. Prints the .deb's path as the last line.
#
# Honours CARGO_TARGET_DIR, and SOURCE_DATE_EPOCH (default: the last commit's date) so that
# two builds of one commit give the same package.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    printf 'build-deb: error: %s\n  help: %s\n' "$1" "$2" >&2
    exit 1
}

command -v python3 >/dev/null || die "python3 not found" "apt-get install python3"
cargo deb --version >/dev/null 2>&1 ||
    die "cargo-deb is not installed" "cargo install cargo-deb --locked"

if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# One `cargo metadata` for what the package needs from Cargo.toml (target dir, version,
# maintainer): the single source of truth.
read -r target_dir version maintainer < <(
    cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "warden")
# The maintainer has spaces: the last field, so that read keeps it whole.
print(m["target_directory"], p["version"], p["metadata"]["deb"]["maintainer"])
'
)

[[ -n ${maintainer:-} ]] ||
    die "cannot read the package metadata from Cargo.toml" "run 'cargo metadata --no-deps --locked'"
# Shipped as they are (Cargo.toml's assets); named here so that a missing one says what it is.
for f in systemd/warden@.service systemd/io.warden.Agent.conf docs/MIGRATION.md docs/RUNBOOK.md; do
    [[ -f $f ]] || die "$f is missing" "the package ships it (Cargo.toml [package.metadata.deb] assets): restore it"
done

cargo build --release --locked >&2

bin="$target_dir/release/warden"
assets="$target_dir/release/assets"
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/tmpfiles.d" "$assets/sysusers.d"
"$bin" generate man --out "$assets/man" >/dev/null
# Compressed here: cargo-deb leaves files under the target dir as they are.
gzip -9n "$assets"/man/*.1
"$bin" generate completion bash >"$assets/completions/warden.bash"
"$bin" generate completion zsh >"$assets/completions/_warden"
"$bin" generate completion fish >"$assets/completions/warden.fish"
# Under their installed names: cargo-deb's postinst names the source file to
# systemd-tmpfiles and systemd-sysusers.
cp systemd/warden.tmpfiles.conf "$assets/tmpfiles.d/warden.conf"
cp systemd/warden.sysusers.conf "$assets/sysusers.d/warden.conf"

# Debian wants a changelog; the release history itself lives in git. gzip -n: no name or
# time stamp in the header, for a reproducible package.
gzip -9n >"$assets/changelog.Debian.gz" <<EOF
warden ($version-1) unstable; urgency=medium

  * Release $version.

 -- $maintainer  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF

# --strip: also drops the .comment and .note sections that the profile's strip leaves.
deb=$(cargo deb --no-build --locked --strip | tail -n 1)
[[ -f $deb ]] || die "cargo deb did not report a package (got: $deb)" \
    "run 'cargo deb --no-build -v' to see why"
echo "$deb"
