"""Runs the original MES dashboard's contract check as its ExecStartPre= would: a fresh
Python process calling validate_runtime_contract(strict=True). Only the two modules it needs
are loaded (the package's __init__ would import the whole Flask app).

usage: python3 peer_check.py DIR   (DIR holds the original's core/runtime_contract.py and
                                    core/feature_flags.py; not shipped with warden)
"""

import importlib.util
import sys
import types

base = sys.argv[1]
for pkg in ("mes_dashboard", "mes_dashboard.core"):
    stub = types.ModuleType(pkg)
    stub.__path__ = []
    sys.modules[pkg] = stub
for name in ("feature_flags", "runtime_contract"):
    spec = importlib.util.spec_from_file_location(f"mes_dashboard.core.{name}", f"{base}/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
errors = sys.modules["mes_dashboard.core.runtime_contract"].validate_runtime_contract(strict=True)
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
