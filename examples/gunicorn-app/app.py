"""The bundled example application: a WSGI app served by Gunicorn under warden's contract.

Each response names the worker that served it, so a reload is visible from outside: after a
graceful reload (SIGHUP to the master) the answers come from new worker PIDs.

It also reads warden's kill-switch, as an app would to turn off a feature: once, when the
worker starts (the file is `WARDEN_KILL_SWITCH_FILE`; warden reloads the workers after a flip,
so every worker reads the new value).
"""

import json
import os
import time

STARTED = time.time()


def _kill_switch():
    path = os.environ.get("WARDEN_KILL_SWITCH_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return bool(json.load(f).get("engaged"))
    except (OSError, ValueError, AttributeError):
        return None


KILL_SWITCH = _kill_switch()


def app(environ, start_response):
    body = {
        "worker_pid": os.getpid(),
        "master_pid": os.getppid(),
        "worker_started": STARTED,
        "kill_switch_engaged": KILL_SWITCH,
        "path": environ.get("PATH_INFO", "/"),
    }
    data = (json.dumps(body) + "\n").encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
