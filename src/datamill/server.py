"""Running the service: the API under uvicorn on the embedded defaults or configured stores."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import uvicorn

from datamill.api.app import create_app
from datamill.config import Settings
from datamill.demo import install_demo
from datamill.logs import configure_logging
from datamill.runtime.process import stop_process
from datamill.runtime.streaming.supervisor import SupervisorHolder
from datamill.runtime.worker import WorkerPool
from datamill.scheduler.process import SchedulerLoop
from datamill.services.runtime import Runtime
from datamill.services.users import bootstrap_admin


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(settings: Settings, *, demo: bool = False) -> None:
    """Migrate the store, bootstrap the admin (and the demo), start the workers, serve.

    SIGTERM and Ctrl-C (SIGINT) stop the service gracefully. uvicorn finishes the
    requests in flight and then raises the signal again once its own handlers are gone;
    the signal then meets :func:`_exit_cleanly`, so the workers, scheduler and streaming
    engine are stopped here too and the process exits with status 0, as a service manager
    expects (not killed by the signal, nor with a KeyboardInterrupt).
    """
    if threading.current_thread() is threading.main_thread():
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, _exit_cleanly)
    configure_logging(settings.log_level, settings.log_json)
    runtime = Runtime.open(settings)
    bootstrap_admin(runtime)
    if demo:
        install_demo(runtime)
    url = f"http://{settings.host}:{settings.port}"
    print(f"datamill is starting at {url} (API {url}/api/v1, docs {url}/docs)", flush=True)
    print(f"metadata: {runtime.engine.url.render_as_string(hide_password=True)}", flush=True)
    print(f"admin token file: {settings.admin_token_file}", flush=True)
    if demo:
        print(
            "demo project: 'demo' (data sources 'events' and 'devices', running streaming "
            "job 'device_alerts')",
            flush=True,
        )
        print(
            f'try: curl -H "Authorization: Bearer $(cat {settings.admin_token_file})" '
            f"{url}/api/v1/projects/demo/datasources/events/preview",
            flush=True,
        )
    pool = WorkerPool(settings, settings.workers)
    pool.start()
    supervisor = pool.supervise(interval=2.0)
    scheduler = SchedulerLoop.spawn(settings) if settings.scheduler else None
    streaming = SupervisorHolder(settings) if settings.streaming_engine else None
    print(
        f"workers: {settings.workers} processes; scheduler: {bool(scheduler)}; "
        f"streaming engine: {bool(streaming)}",
        flush=True,
    )
    try:
        uvicorn.run(
            create_app(runtime=runtime),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
        )
    finally:
        supervisor.set()
        if scheduler is not None:
            stop_process(scheduler)
        if streaming is not None:
            streaming.stop()
        pool.stop()
        runtime.close()
        print("datamill stopped", flush=True)
