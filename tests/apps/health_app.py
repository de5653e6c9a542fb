"""A WSGI app whose /health answers as the MES dashboard's does, in the condition a test writes
to the file $HEALTH_SCENARIO names (read at each request):

    healthy     200, not degraded
    saturated   200, degraded_reason db_pool_saturated, pool saturation 1.0
    db_down     503, degraded_reason database_unreachable
    hang        answers after 30 s (past any probe's timeout)
    fail        500, no document
    flap        failing (500) and healthy in turn, request by request across the workers

Any other path answers as the bundled example does: which worker served it.

Under the reload benchmark ($WARDEN_BENCH_EVENTS set), each /health answer is stamped there as
`answer NS PID STATUS`, CLOCK_REALTIME, as it is handed to Gunicorn to send.
"""

import fcntl
import json
import os
import time

STARTED = time.time()


def _scenario():
    try:
        with open(os.environ["HEALTH_SCENARIO"], encoding="utf-8") as f:
            return f.read().strip() or "healthy"
    except (KeyError, OSError):
        return "healthy"


def _flap_turn():
    """The count of flapping answers so far, shared by the workers through a locked file."""
    path = os.environ["HEALTH_SCENARIO"] + ".count"
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read() or 0)
        f.seek(0)
        f.truncate()
        f.write(str(n + 1))
        return n


def _health():
    s = _scenario()
    doc = {
        "status": "ok",
        "degraded_reason": None,
        "database_pool": {"state": {"saturation": 0.1}},
        "circuit_breaker": {"state": "CLOSED"},
    }
    code = "200 OK"
    if s == "saturated":
        doc["degraded_reason"] = "db_pool_saturated"
        doc["database_pool"]["state"]["saturation"] = 1.0
    elif s == "db_down":
        doc["degraded_reason"] = "database_unreachable"
        code = "503 Service Unavailable"
    elif s == "hang":
        time.sleep(30)
    elif s == "flap" and _flap_turn() % 2 == 0:
        code = "500 Internal Server Error"
    elif s == "fail":
        return "500 Internal Server Error", {}
    return code, doc


def _stamp(code):
    path = os.environ.get("WARDEN_BENCH_EVENTS")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            line = "answer %d %d %s\n" % (time.clock_gettime_ns(time.CLOCK_REALTIME), os.getpid(), code[:3])
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/health":
        code, body = _health()
    else:
        code = "200 OK"
        body = {"worker_pid": os.getpid(), "master_pid": os.getppid(), "worker_started": STARTED}
    data = (json.dumps(body) + "\n").encode()
    start_response(code, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    if environ.get("PATH_INFO") == "/health":
        _stamp(code)
    return [data]
