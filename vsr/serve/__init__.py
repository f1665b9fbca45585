"""``vsr serve``: a page in the browser, served on this machine, over the functions the command line calls
(see vsr.serve.app for the routes and vsr.serve.jobqueue for the queue)."""
from __future__ import annotations

import gc
import secrets
import socket
from pathlib import Path

from ..errors import VsrError


def default_state_dir() -> Path:
    from .. import zoo

    return zoo.cache_dir() / "serve"


def serve(root: Path | None = None, *, host: str = "127.0.0.1", port: int = 8770, state: Path | None = None) -> int:
    """Serve until Ctrl-C; the running job stops at its next batch and continues at the next start."""
    try:
        import uvicorn

        from .app import create_app, needs_token
    except ImportError as e:
        raise VsrError(f"vsr serve needs {e.name}: pip install 'vsr[serve]'") from None
    root = Path(root or Path.home())
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:  # a taken port is one line now, not a log message from the server
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OverflowError:
            raise VsrError(f"--port {port}: expected 1 to 65535") from None
        except OSError as e:
            raise VsrError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from None
    token = secrets.token_urlsafe(16) if needs_token(host) else None
    app = create_app(root, Path(state or default_state_dir()), token=token, local=token is None)
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"vsr serve: open {address} in a browser (files under {app.state.root.folder}); Ctrl-C stops", flush=True)
    if token:
        print(f"vsr serve: other machines can reach this address; the page asks for the token {token}", flush=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.queue.stopping.set()  # open event streams end now rather than at the grace period's end
            super().handle_exit(sig, frame)

    gc.freeze()  # the modules loaded so far live until the end: no collection walks them, not even at exit (seconds)
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3))
    try:
        server.run()
    except KeyboardInterrupt:  # the Ctrl-C that stopped it, raised again once it has stopped
        pass
    return 0
