"""Runs the original MES dashboard's watchdog (scripts/worker_watchdog.py) for the reload
benchmark, as its unit would, with only the core modules it imports loaded (the package's
__init__ would import the whole Flask app).

usage: python3 peer_watchdog.py CORE_DIR SCRIPT
       CORE_DIR: the original's src/mes_dashboard/core; SCRIPT: its scripts/worker_watchdog.py
       (neither is shipped with warden)
"""

import importlib.util
import runpy
import sys
import types

core, script = sys.argv[1], sys.argv[2]
for pkg in ("mes_dashboard", "mes_dashboard.core"):
    stub = types.ModuleType(pkg)
    stub.__path__ = []
    sys.modules[pkg] = stub
for name in ("feature_flags", "runtime_contract", "watchdog_logging", "worker_recovery_policy"):
    spec = importlib.util.spec_from_file_location(f"mes_dashboard.core.{name}", f"{core}/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
