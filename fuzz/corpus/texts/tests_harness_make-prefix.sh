#!/usr/bin/env bash
# make-prefix.sh ROOT [ENV_NAME] — lays out a conda-like install for warden's tests and demo:
#   ROOT/conda-meta/history, ROOT/bin/conda          the install root (base env)
#   ROOT/envs/ENV_NAME                               a Python venv (--copies, so bin/python is
#                                                    the prefix's own) with gunicorn from PyPI,
#   ROOT/envs/ENV_NAME/conda-meta/history            marked as a conda env, with package records
#   ROOT/envs/ENV_NAME/conda-meta/python-<v>-<b>.json    python-<ver>-<build>.json and gunicorn's
# Idempotent and safe to call concurrently (a lock serializes builders). Needs python3-venv
# and access to PyPI.
#   WARDEN_TEST_PYTHON    interpreter to copy (default /usr/bin/python3)
#   WARDEN_TEST_GUNICORN  pip requirement for gunicorn (default: gunicorn)
set -euo pipefail
root=${1:?usage: make-prefix.sh ROOT [ENV_NAME]}
name=${2:-app}
py=${WARDEN_TEST_PYTHON:-/usr/bin/python3}
req=${WARDEN_TEST_GUNICORN:-gunicorn}
prefix=$root/envs/$name

mkdir -p "$root"
exec 9>"$root.lock"
flock 9
[ -e "$prefix/.fixture-complete" ] && exit 0

rm -rf "$prefix"
mkdir -p "$root/bin" "$root/conda-meta" "$root/envs"
printf '==> 2026-01-01 00:00:00 <==\n# cmd: conda create -n base\n' > "$root/conda-meta/history"
# warden never runs conda; CONDA_BIN only has to be the install's executable.
printf '#!/bin/sh\necho "conda: fixture install at %s; not a real conda" >&2\nexit 1\n' "$root" > "$root/bin/conda"
chmod 755 "$root/bin/conda"

"$py" -m venv --copies "$prefix"
"$prefix/bin/python" -m pip install -q --disable-pip-version-check --no-input "$req"

ver=$("$prefix/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
gver=$("$prefix/bin/python" -c 'import importlib.metadata as m; print(m.version("gunicorn"))')
mkdir -p "$prefix/conda-meta"
printf '==> 2026-01-01 00:00:00 <==\n# cmd: conda create -n %s python=%s gunicorn=%s\n+defaults::python-%s-h0fixture_0\n+defaults::gunicorn-%s-py_0\n' \
  "$name" "$ver" "$gver" "$ver" "$gver" > "$prefix/conda-meta/history"
printf '{"name": "python", "version": "%s", "build": "h0fixture_0", "build_number": 0}\n' "$ver" \
  > "$prefix/conda-meta/python-$ver-h0fixture_0.json"
printf '{"name": "gunicorn", "version": "%s", "build": "py_0", "build_number": 0}\n' "$gver" \
  > "$prefix/conda-meta/gunicorn-$gver-py_0.json"
chmod -R a+rX "$root"
touch "$prefix/.fixture-complete"
echo "make-prefix: $prefix (python $ver, gunicorn $gver)" >&2
