"""The bundled example application: a WSGI app served by Gunicorn under warden's contract.

Each response names the worker that served it, so a reload is visible from outside: after a
graceful reload (SIGHUP to the master) the answers come from new worker PIDs.
"""

import json
import os
import time

STARTED = time.time()


def app(environ, start_response):
    body = {
        "worker_pid": os.getpid(),
        "master_pid": os.getppid(),
        "worker_started": STARTED,
        "path": environ.get("PATH_INFO", "/"),
    }
    data = (json.dumps(body) + "\n").encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
