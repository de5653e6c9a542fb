"""Gunicorn configuration for the reload benchmark: the master and its workers write one line
per event to $WARDEN_BENCH_EVENTS, stamped with CLOCK_REALTIME (the clock the benchmark reads
when it writes a flag or sends a signal):

    hup  NS PID   the master's SIGHUP handler was entered (before Gunicorn's own handler)
    up   NS PID   a worker finished booting (post_worker_init, in the worker)
    exit NS PID   a worker is exiting (worker_exit, in the worker, as the last thing it runs;
                  the master reaps it later, when its loop gets to it)

Lines are single O_APPEND writes, so master and workers can share the file.
"""

import os
import signal
import time

_FD = None


def _log(event, pid):
    global _FD
    if _FD is None:
        _FD = os.open(os.environ["WARDEN_BENCH_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_FD, b"%s %d %d\n" % (event, time.clock_gettime_ns(time.CLOCK_REALTIME), pid))


def when_ready(server):
    # Gunicorn installed its handlers in start(), before this hook; wrap the one for SIGHUP.
    gunicorn_handler = signal.getsignal(signal.SIGHUP)

    def on_hup(sig, frame):
        _log(b"hup", os.getpid())
        gunicorn_handler(sig, frame)

    signal.signal(signal.SIGHUP, on_hup)


def post_worker_init(worker):
    # A forked worker inherits the master's descriptor; its writes stay single appends.
    _log(b"up", os.getpid())


def worker_exit(server, worker):
    _log(b"exit", os.getpid())
