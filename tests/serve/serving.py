"""A real server on a free loopback port: uvicorn in a thread, stopped on exit."""

import socket
import threading
import time
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(lm, **options):
    """Serve create_app(lm, **options) on a free loopback port; yields the base URL (http://127.0.0.1:PORT)."""
    import uvicorn

    from blockgen.serve import create_app

    port = free_port()
    config = uvicorn.Config(create_app(lm, **options), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "the server did not stop"
