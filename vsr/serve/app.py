"""The HTTP side of ``vsr serve``: a JSON API over the queue (vsr.serve.jobqueue), the folders under the root
(vsr.serve.paths), the shipped presets and the model cards, a stream of the queue's state (server-sent
events), and the one page that uses them (page.html, served from the package: the page needs no internet).

FastAPI (on Starlette, served by uvicorn) because the API is a dozen small JSON routes whose bodies are
checked by their types, server-sent events need nothing but a streaming response, and the long work runs in
a plain thread the routes only read; the page stays one HTML file of plain JavaScript.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
import secrets
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__, catalog, zoo
from ..errors import VsrError
from ..images import IMAGE_SUFFIXES
from ..video import VIDEO_SUFFIXES
from ..video.repair import REPAIRS
from .jobqueue import JobQueue
from .paths import OutsideRoot, Root

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
UPLOADS = "vsr-uploads"  # the folder under the root that files dropped on the page go to
UPLOAD_LIMIT = 64 * 2**30  # bytes: a few hours of DV or a DVD's VOBs, not a full disk
EVENT_EVERY_S = 0.5  # the stream's check for changes; the page's progress is never older than this


class JobRequest(BaseModel):
    """A file and the `vsr upscale` options the page offers (see jobqueue.FLAGS); None: the default."""

    model_config = ConfigDict(extra="forbid")
    path: str  # the input, relative to the root
    output: str | None = None  # relative to the root; default beside the input, as vsr upscale names it
    preset: str | None = None
    model: str | None = None
    scale: float | None = Field(None, gt=0, le=16)
    temperature: float | None = Field(None, ge=0)
    device: str | None = Field(None, pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")
    backend: str | None = Field(None, pattern=r"^(auto|torch|openvino|ncnn)$")
    codec: str | None = Field(None, pattern=r"^[a-z0-9_-]+$")
    encoder_preset: str | None = Field(None, pattern=r"^[a-z0-9]+$")
    crf: float | None = Field(None, ge=0, le=63)
    repair: str | None = Field(None, pattern=r"^[a-z,-]+$")
    segment_frames: int | None = Field(None, ge=1)
    max_frames: int | None = Field(None, ge=1)


class PreviewRequest(JobRequest):
    at: float = Field(0.0, ge=0)  # seconds into the file


def create_app(root: Path, state_dir: Path, *, token: str | None = None, local: bool = True,
               upload_limit: int = UPLOAD_LIMIT) -> FastAPI:
    """Files dropped on the page go to UPLOADS under the root, each at most ``upload_limit`` bytes.
    ``token``: required of every API call (a header ``Authorization: Bearer T`` or ``?token=T``);
    ``local``: only requests addressed to this machine's loopback names are answered (a web site that
    points its own name at 127.0.0.1 cannot reach the API)."""
    top = Root(root)
    jobs = JobQueue(state_dir)
    previewing = threading.Lock()  # a preview takes the CPU or GPU: a second waits rather than halving both

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.start()
        try:
            yield
        finally:  # the running job stops at its next batch; its finished segments wait for the next start
            await asyncio.to_thread(jobs.stop)

    app = FastAPI(title="vsr", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.queue, app.state.root = jobs, top

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if local and request.url.hostname not in LOCAL_HOSTS:
            return JSONResponse({"detail": f"this server answers only {', '.join(LOCAL_HOSTS)}"}, status_code=400)
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != request.headers.get("host"):
            # another site's page in the same browser may send a form here; it may not change anything
            return JSONResponse({"detail": "requests from other sites are refused"}, status_code=403)
        if token is not None and request.url.path.startswith("/api/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.query_params.get("token", "")
            if not secrets.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "a token is required: the one `vsr serve` printed"}, status_code=401)
        return await call_next(request)

    @app.exception_handler(VsrError)
    async def refused(request: Request, exc: VsrError):
        status = 403 if isinstance(exc, OutsideRoot) else 400
        return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=status)

    @app.exception_handler(KeyError)
    async def unknown_job(request: Request, exc: KeyError):
        return JSONResponse({"detail": f"no job {exc.args[0]!r}"}, status_code=404)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (resources.files("vsr.serve") / "page.html").read_text(encoding="utf-8")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"version": __version__, "root": str(top.folder), "repairs": list(REPAIRS)}

    @app.get("/api/browse")
    def browse(path: str = "") -> dict[str, Any]:
        return top.listing(path)

    @app.get("/api/presets")
    def presets() -> list[dict[str, Any]]:
        from ..upscale import load_preset

        out = []
        for name in catalog.names("preset"):
            data = load_preset(name)
            out.append({"name": name, "description": data.get("description", ""), "model": data.get("model")})
        return out

    @app.get("/api/models")
    def models() -> list[dict[str, Any]]:
        return [{"name": name, "description": card.description, "architecture": card.architecture,
                 "scale": card.scale, "content": card.content, "license": card.license,
                 "weights": "present" if zoo.weights_present(card) else
                 ("converted on first use" if card.ncnn else "missing")}
                for name, card in sorted(zoo.cards().items())]

    @app.get("/api/jobs")
    def list_jobs() -> dict[str, Any]:
        version, entries = jobs.snapshot()
        return {"version": version, "jobs": entries}

    def checked(req: JobRequest) -> tuple[Path, dict[str, Any], Path | None]:
        """The input, the settings and the output (None: the default) of a request, or why not."""
        src = top.resolve(req.path)
        if not src.exists():
            raise VsrError(f"{req.path!r} is not under the root")
        if src.is_file() and src.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            kinds = " ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            raise VsrError(f"{req.path!r} is neither an image nor a video ({kinds})")
        dst = top.resolve(req.output) if req.output else None
        if dst is not None and not dst.parent.is_dir():
            raise VsrError(f"the folder of the output {req.output!r} does not exist")
        if req.model is not None and req.model not in zoo.cards():
            raise VsrError(f"unknown model {req.model!r}; expected one of: {', '.join(sorted(zoo.cards()))}")
        if req.preset is not None and req.preset not in catalog.names("preset"):
            raise VsrError(f"unknown preset {req.preset!r}; expected one of: {', '.join(catalog.names('preset'))}")
        return src, req.model_dump(exclude={"path", "output", "at"}, exclude_none=True), dst

    @app.post("/api/jobs", status_code=201)
    def add_job(req: JobRequest) -> dict[str, Any]:
        """A file, or each image and video of a folder (not its subfolders): one job each."""
        src, settings, dst = checked(req)
        if not src.is_dir():
            return {"ids": [jobs.add(src, dst / src.name if dst and dst.is_dir() else dst, settings).id]}
        files = [top.resolve(e["path"]) for e in top.listing(req.path)["entries"] if not e["dir"]]
        if not files:
            raise VsrError(f"{req.path!r} holds no images or videos")
        if dst is not None and not dst.is_dir():
            raise VsrError(f"the output of a folder is a folder; {req.output!r} is none")
        return {"ids": [jobs.add(f, dst / f.name if dst else None, settings).id for f in files]}

    @app.post("/api/upload", status_code=201)
    async def upload(request: Request, name: str) -> dict[str, Any]:
        """The request's body as a new file under UPLOADS (never over an existing one: a taken name gets
        a number); the page sends each dropped file this way."""
        base = Path(name.replace("\\", "/")).name
        suffix = Path(base).suffix.lower()
        if not re.fullmatch(r"[^\x00-\x1f/]{1,200}", base) or base.startswith(".") or \
                suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            raise VsrError(f"{name!r}: upload images or videos ({' '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
        folder = top.resolve(UPLOADS)  # a link named so that leads out of the root is refused
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.upload"
        size = 0
        try:
            with open(tmp, "xb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > upload_limit:
                        raise HTTPException(413, f"{base} is over the upload limit of {upload_limit / 2**30:g} GiB; "
                                            f"copy it under {top.folder} and pick it in the browser instead")
                    await asyncio.to_thread(fh.write, chunk)
            stem = Path(base).stem
            for n in range(10000):
                dst = folder / (base if n == 0 else f"{stem}-{n}{Path(base).suffix}")
                try:
                    os.link(tmp, dst)  # fails on an existing name: nothing is overwritten
                    break
                except FileExistsError:
                    continue
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": top.relative(dst), "size": size}

    @app.post("/api/preview")
    def preview(req: PreviewRequest) -> dict[str, Any]:
        """The frame at ``at`` restored as the job would restore it (vsr.serve.preview)."""
        from .preview import make_preview

        src, settings = checked(req)[:2]
        if not src.is_file():
            raise VsrError(f"{req.path!r} is a folder; preview one of its files")
        with previewing:
            shown = make_preview(src, req.at, settings, jobs.state_dir / "previews")
        base = f"/api/preview/{shown['id']}/"
        return {**shown, "before_url": base + "before.png", "after_url": base + "after.png"}

    @app.get("/api/preview/{key}/{name}")
    def preview_image(key: str, name: str) -> FileResponse:
        if not re.fullmatch(r"[0-9a-f]{12}", key) or name not in ("before.png", "after.png"):
            raise HTTPException(404, "no such preview")
        path = jobs.state_dir / "previews" / key / name
        if not path.is_file():
            raise HTTPException(404, "no such preview (only the newest are kept)")
        return FileResponse(path, media_type="image/png")

    @app.post("/api/jobs/{job_id}/compare")
    def compare_job(job_id: str) -> dict[str, Any]:
        """A finished video against its input, as `vsr compare` shows them (vsr.serve.preview)."""
        from .preview import compare_view

        entry = jobs.get(job_id)
        if entry.state != "done" or not entry.output:
            raise VsrError(f"job {job_id} has no output to compare yet ({entry.state})")
        with previewing:
            shown = compare_view(Path(entry.src), Path(entry.output), jobs.state_dir / "compare" / job_id)
        base = f"/api/jobs/{job_id}/compare/"
        return {**shown, "picture_url": base + "picture.png", "plot_url": base + "plot.png"}

    @app.get("/api/jobs/{job_id}/compare/{name}")
    def compare_image(job_id: str, name: str) -> FileResponse:
        from ..compare import PICTURE, PLOT

        files = {"picture.png": PICTURE, "plot.png": PLOT}
        path = jobs.state_dir / "compare" / jobs.get(job_id).id / files.get(name, "-")
        if not path.is_file():
            raise HTTPException(404, "no such picture: compare the job first")
        return FileResponse(path, media_type="image/png")

    @app.post("/api/jobs/{job_id}/{action}")
    def act(job_id: str, action: str) -> dict[str, Any]:
        do = {"pause": jobs.pause, "resume": jobs.resume, "cancel": jobs.cancel,
              "up": lambda i: jobs.move(i, -1), "down": lambda i: jobs.move(i, 1)}.get(action)
        if do is None:
            raise HTTPException(404, f"no action {action!r}; expected pause, resume, cancel, up or down")
        return {"id": do(job_id).id}

    @app.delete("/api/jobs/{job_id}")
    def remove(job_id: str) -> dict[str, Any]:
        jobs.remove(job_id)
        return {"id": job_id}

    @app.get("/api/jobs/{job_id}/output")
    def output(job_id: str, play: bool = False) -> FileResponse:
        """The output as a download, or with ``play`` for the browser to show (it plays what it can)."""
        entry = jobs.get(job_id)
        if entry.state != "done" or not entry.output:
            raise VsrError(f"job {job_id} has no output yet ({entry.state})")
        path = top.resolve(top.relative(Path(entry.output)))
        return FileResponse(path, filename=path.name, content_disposition_type="inline" if play else "attachment")

    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        """The queue as server-sent events: a snapshot whenever it changed (checked every EVENT_EVERY_S)."""
        async def stream():
            last, sent = -1, time.monotonic()
            while not jobs.stopping.is_set() and not await request.is_disconnected():
                version, entries = jobs.snapshot()
                if version != last:
                    yield f"data: {json.dumps({'version': version, 'jobs': entries})}\n\n"
                    last, sent = version, time.monotonic()
                elif time.monotonic() - sent > 15:
                    yield ": still here\n\n"  # keeps proxies and the browser from dropping an idle stream
                    sent = time.monotonic()
                await asyncio.sleep(EVENT_EVERY_S)
        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def needs_token(host: str) -> bool:
    """Any address but the loopback one lets other machines in: they must show the printed token."""
    return host not in LOCAL_HOSTS
