#!/usr/bin/env bash
# Verifies a release bundle (packaging/release.sh): the checksums, the signature over them, the
# SBOM against the SPDX reference validator, that the tarball's binary runs, and that the tarball
# and the .deb ship the agent's template warden@.service (and no warden.service).
#
#   packaging/verify.sh DIR [ALLOWED_SIGNERS] [--tamper-test]
#
# ALLOWED_SIGNERS: the maintainer's allowed_signers file (default: packaging/allowed_signers
# when the repository has one). Without either, a bundle signed with an ephemeral key is checked
# against its own allowed_signers.ephemeral, which proves only that the pipeline produced it.
# --tamper-test also shows that a modified file is caught (on a copy).
# The SPDX validator: pyspdxtools on PATH, $PYSPDXTOOLS, or /var/tmp/warden-venv-spdx.
set -euo pipefail

readonly IDENTITY="release@warden"
readonly NAMESPACE="file"

die() {
    printf 'verify: error: %s\n  help: %s\n' "$1" "$2" >&2
    exit 1
}

dir=
signers=
tamper=false
for arg in "$@"; do
    case $arg in
    --tamper-test) tamper=true ;;
    -h | --help)
        sed -n '2,13s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    -*) die "unknown option $arg" "packaging/verify.sh DIR [ALLOWED_SIGNERS] [--tamper-test]" ;;
    *)
        if [[ -z $dir ]]; then
            dir=$arg
        elif [[ -z $signers ]]; then
            signers=$arg
        else
            die "too many arguments" "packaging/verify.sh DIR [ALLOWED_SIGNERS] [--tamper-test]"
        fi
        ;;
    esac
done
[[ -n $dir ]] || die "no bundle directory given" "packaging/verify.sh dist/warden-VERSION [ALLOWED_SIGNERS]"
[[ -f $dir/SHA256SUMS && -f $dir/SHA256SUMS.sig ]] ||
    die "$dir has no SHA256SUMS and SHA256SUMS.sig" "give the directory packaging/release.sh wrote"
dir=$(cd "$dir" && pwd)
if [[ -z $signers && -f $(dirname "$0")/allowed_signers ]]; then
    signers=$(dirname "$0")/allowed_signers
elif [[ -z $signers ]]; then
    [[ -f $dir/allowed_signers.ephemeral ]] ||
        die "no allowed_signers file given" "pass the maintainer's allowed_signers file as the second argument"
    signers=$dir/allowed_signers.ephemeral
    echo "verify: NOTE: using the bundle's own allowed_signers.ephemeral: this proves the pipeline, not the publisher"
fi
[[ -r $signers ]] || die "cannot read $signers" "check the path of the allowed_signers file"
signers=$(cd "$(dirname "$signers")" && pwd)/$(basename "$signers")

pyspdxtools=${PYSPDXTOOLS:-}
if [[ -z $pyspdxtools ]]; then
    pyspdxtools=$(command -v pyspdxtools || echo /var/tmp/warden-venv-spdx/bin/pyspdxtools)
fi
[[ -x $pyspdxtools ]] || die "the SPDX validator pyspdxtools is not installed" \
    "python3 -m venv /var/tmp/warden-venv-spdx && /var/tmp/warden-venv-spdx/bin/pip install spdx-tools"

# The checks, as the README shows them. Returns non-zero on the first failure.
check_bundle() {
    local d=$1
    (cd "$d" && sha256sum --check SHA256SUMS) || return 1
    ssh-keygen -Y verify -f "$signers" -I "$IDENTITY" -n "$NAMESPACE" -s "$d/SHA256SUMS.sig" \
        <"$d/SHA256SUMS" || return 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== checksums and signature"
check_bundle "$dir" || die "the bundle in $dir does not verify" \
    "do not install it; fetch it again, and check that ALLOWED_SIGNERS is the maintainer's"

echo "== SBOM"
sboms=("$dir"/*.spdx.json)
[[ -f ${sboms[0]} ]] || die "no *.spdx.json in $dir" "the bundle is incomplete: rebuild it with packaging/release.sh"
"$pyspdxtools" -i "${sboms[0]}" || die "${sboms[0]} is not a valid SPDX document" \
    "rebuild it with packaging/sbom.py and report the validator's messages"
packages=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["packages"]))' "${sboms[0]}")
echo "$(basename "${sboms[0]}"): valid SPDX ($packages packages)"

echo "== the tarball's binary"
tarballs=("$dir"/warden-*-linux.tar.gz)
[[ -f ${tarballs[0]} ]] || die "no warden-*-linux.tar.gz in $dir" "the bundle is incomplete: rebuild it"
tar -xzf "${tarballs[0]}" -C "$tmp"
bins=("$tmp"/warden-*/bin/warden)
"${bins[0]}" --version

echo "== the tarball's and the .deb's contents"
# The agent is the template warden@.service, one instance per app; warden.service is gone.
tree=$(dirname "$(dirname "${bins[0]}")")
for f in lib/systemd/system/warden@.service share/dbus-1/system.d/io.warden.Agent.conf \
    lib/sysusers.d/warden.conf lib/tmpfiles.d/warden.conf share/doc/warden/MIGRATION.md; do
    [[ -f $tree/$f ]] || die "the tarball has no $f" "the bundle is incomplete or stale: rebuild it with packaging/release.sh"
done
[[ ! -e $tree/lib/systemd/system/warden.service ]] ||
    die "the tarball still ships lib/systemd/system/warden.service" "rebuild the bundle from a current checkout"
debs=("$dir"/*.deb)
if [[ -f ${debs[0]} ]] && command -v dpkg-deb >/dev/null; then
    listing=$(dpkg-deb -c "${debs[0]}" | awk '{print $NF}')
    for f in ./usr/lib/systemd/system/warden@.service ./usr/share/dbus-1/system.d/io.warden.Agent.conf \
        ./usr/lib/sysusers.d/warden.conf ./usr/lib/tmpfiles.d/warden.conf ./usr/share/doc/warden/MIGRATION.md; do
        grep -qxF "$f" <<<"$listing" || die "$(basename "${debs[0]}") has no ${f#.}" \
            "the bundle is incomplete or stale: rebuild it with packaging/release.sh"
    done
    ! grep -qxF ./usr/lib/systemd/system/warden.service <<<"$listing" ||
        die "$(basename "${debs[0]}") still ships /usr/lib/systemd/system/warden.service" "rebuild the bundle from a current checkout"
fi
echo "the agent's template warden@.service, the D-Bus policy, sysusers, tmpfiles and MIGRATION.md: present; no warden.service"

if $tamper; then
    echo "== tamper test (on a copy)"
    copy=$tmp/tampered
    cp -a "$dir" "$copy"
    # One byte of the tarball, inverted.
    victim=$copy/$(basename "${tarballs[0]}")
    offset=$(($(stat -c %s "$victim") / 2))
    byte=$(od -An -tu1 -j "$offset" -N1 "$victim" | tr -d ' ')
    printf '%b' "$(printf '\\%03o' $((byte ^ 255)))" | dd of="$victim" bs=1 seek="$offset" conv=notrunc status=none
    if check_bundle "$copy" >"$tmp/tamper1.log" 2>&1; then
        cat "$tmp/tamper1.log"
        die "a modified tarball passed the checks" "the verification is broken: do not trust it"
    fi
    grep -F 'FAILED' "$tmp/tamper1.log" || true
    echo "tamper test: modified tarball rejected (as expected)"
    # A matching checksum written into SHA256SUMS: the signature must catch that.
    new=$(sha256sum "$victim" | cut -d' ' -f1)
    sed -i "s/^[0-9a-f]\{64\}\(  $(basename "$victim")\)$/$new\1/" "$copy/SHA256SUMS"
    if check_bundle "$copy" >"$tmp/tamper2.log" 2>&1; then
        cat "$tmp/tamper2.log"
        die "a modified SHA256SUMS passed the signature check" "the verification is broken: do not trust it"
    fi
    grep -i 'signature\|verif' "$tmp/tamper2.log" | tail -n 1 || true
    echo "tamper test: modified SHA256SUMS rejected by the signature (as expected)"
fi
echo "verify: OK: $dir"
