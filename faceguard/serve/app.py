"""The FastAPI application of ``faceguard serve``: the page, ``/api/protect`` and the job API.

Routes (reference with examples: docs/serve.md)::

    GET    /                                   the page (plain HTML/CSS/JS from the package)
    GET    /api/health                         {"status": "ok"}
    GET    /api/options                        ε, method, identities (the CLI's defaults and help), limits
    POST   /api/protect                        one photo in, the protected photo out (record in a header)
    POST   /api/jobs                           a job (fields eps, method, identities; photos optional)
    POST   /api/jobs/{id}/photos               add photos to it
    GET    /api/jobs/{id}                      progress and every photo's record
    GET    /api/jobs/{id}/photos/{i}/original  the upload as received
    GET    /api/jobs/{id}/photos/{i}/protected the protected photo (?download=1: as an attachment)
    POST   /api/jobs/{id}/check                run faceguard check on the job (dlib-resnet)
    GET    /api/jobs/{id}/download             zip of the photos and manifest.json; removes the job
    DELETE /api/jobs/{id}                      cancel and remove the job

Every refusal is a 4xx JSON ``{"error": "..."}`` naming the file and the reason; an unexpected
failure is a 500 JSON error (its traceback goes to the server's log, never to the client).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from faceguard.serve.jobs import Job, JobStore
from faceguard.serve.options import page_options, parse_options
from faceguard.serve.pool import WorkerPool
from faceguard.serve.uploads import Form, Limits, UploadError, read_form
from recognition.files import one_line

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp",
               "TIFF": "image/tiff"}
PAGE_FILES = {"page.css": "text/css", "page.js": "text/javascript"}
RECORD_HEADER = "X-Faceguard-Record"
DISCONNECTED = 499  # the client went away (nginx's code); nobody reads this response


@dataclass
class ServeConfig:
    """One server: worker processes (0: a thread of this process) with ``threads`` torch threads
    each, the device and profile they load, crafting ``changes`` for every method (``{"steps": 2}``),
    the limits, where its temporary folder goes (default: the system's), whether it starts its
    workers before serving, the command recorded in manifests, an engine ``factory`` (tests), and
    a page to open in the default browser once the workers are ready (``faceguard serve --open``)."""

    workers: int = 1
    threads: int | None = None
    device: str = "cpu"
    profile: str | None = None
    changes: dict = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    temp_parent: Path | None = None
    warm: bool = True
    command: str = "faceguard serve"
    factory: object | None = None
    open_url: str | None = None

    def engine_factory(self) -> object:
        """A picklable callable building one worker's engine."""
        if self.factory is not None:
            return self.factory
        from faceguard.serve.engine import Engine
        from faceguard.settings import DEFAULT_PROTECT_METHOD, DEFAULT_STRENGTH

        eps = float(page_options(self.limits)["eps"]["default"])
        return functools.partial(Engine, self.profile, self.device, self.changes,
                                 (DEFAULT_PROTECT_METHOD, eps, DEFAULT_STRENGTH))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _attachment(name: str, inline: bool = False) -> str:
    """A Content-Disposition value for a file name of any characters (RFC 6266)."""
    base = Path(name).name
    ascii_name = base.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return f"{'inline' if inline else 'attachment'}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base)}"


def _page_file(name: str) -> bytes:
    return resources.files("faceguard.serve").joinpath("page", name).read_bytes()


async def _wait(request: Request, task: asyncio.Task) -> bool:
    """Wait for ``task``; False as soon as the client disconnects instead."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return True
        if await request.is_disconnected():
            return False


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The application; its lifespan makes the temporary folder, starts the workers and removes
    expired jobs, and on shutdown removes every job and the folder."""
    config = config or ServeConfig()
    limits = config.limits
    default_eps = float(page_options(limits)["eps"]["default"])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        root = Path(tempfile.mkdtemp(prefix="faceguard-serve-", dir=config.temp_parent))
        pool = WorkerPool(config.engine_factory(), config.workers, config.threads)
        app.state.root, app.state.pool = root, pool
        app.state.store = JobStore(root, pool, limits)
        sweeper = asyncio.create_task(_sweep(app.state.store, limits.job_ttl))
        try:
            if config.warm:
                await pool.warm_up()
            if config.open_url:
                import webbrowser

                threading.Thread(target=webbrowser.open, args=(config.open_url,), daemon=True).start()
            yield
        finally:
            sweeper.cancel()
            app.state.store.close()
            await asyncio.to_thread(pool.close)
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="faceguard serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config

    @app.exception_handler(UploadError)
    async def refused(_: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
        return _error(422, problems or "invalid request")

    @app.exception_handler(ClientDisconnect)
    async def gone(_: Request, __: ClientDisconnect) -> Response:
        return Response(status_code=DISCONNECTED)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {one_line(exc)}")

    def store(request: Request) -> JobStore:
        return request.app.state.store

    async def new_job(request: Request) -> tuple[Job, Form]:
        """A job from a multipart body (its fields and photos), or from no body at all (defaults)."""
        jobs = store(request)
        job = jobs.create("", 0.0)
        try:
            form = await read_form(request, job.incoming, limits) if request.headers.get("content-type") else Form()
            job.method, job.eps, job.strength, job.identities = parse_options(form.fields, default_eps)
        except BaseException:
            jobs.remove(job)
            raise
        return job, form

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page_file("index.html"))

    @app.get("/page/{name}")
    async def page_file(name: str) -> Response:
        if name not in PAGE_FILES:
            raise UploadError(404, f"no page file {name!r}")
        return Response(_page_file(name), media_type=PAGE_FILES[name])

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/options")
    async def options() -> dict:
        return page_options(limits)

    @app.post("/api/protect")
    async def protect(request: Request) -> Response:
        job, form = await new_job(request)
        try:
            if len(form.files) != 1:
                form.discard()
                raise UploadError(400, f"send exactly one photo in the 'photo' field (got {len(form.files)})")
            photo = store(request).add(job, form.files[0])
            if not await _wait(request, photo.task):
                return Response(status_code=DISCONNECTED)
            record = photo.record
            if record["status"] == "error":
                return JSONResponse({"error": f"{photo.name}: {record['reason']}", "record": record}, 422)
            if record["status"] == "no_face":
                return JSONResponse({"error": f"{photo.name}: no face detected; nothing was protected",
                                     "record": record}, 422)
            content = (job.protected / photo.name).read_bytes()
            headers = {RECORD_HEADER: json.dumps(record, separators=(",", ":")),
                       "Content-Disposition": _attachment(photo.name, inline=True)}
            return Response(content, media_type=MEDIA_TYPES.get(record.get("format"), "application/octet-stream"),
                            headers=headers)
        finally:
            store(request).remove(job)

    @app.post("/api/jobs", status_code=201)
    async def create_job(request: Request) -> dict:
        job, form = await new_job(request)
        if form.files:
            store(request).add_all(job, form)
        return job.to_dict()

    @app.post("/api/jobs/{job_id}/photos")
    async def add_photos(job_id: str, request: Request) -> dict:
        job = store(request).get(job_id)
        form = await read_form(request, job.incoming, limits)
        return {"photos": [photo.to_dict() for photo in store(request).add_all(job, form)]}

    @app.get("/api/jobs/{job_id}")
    async def job_status(job_id: str, request: Request) -> dict:
        return store(request).get(job_id).to_dict()

    @app.get("/api/jobs/{job_id}/photos/{index}/{which}")
    async def photo_file(job_id: str, index: int, which: str, request: Request, download: bool = False) -> Response:
        jobs = store(request)
        job = jobs.get(job_id)
        photo = jobs.photo(job, index)
        if which not in ("original", "protected"):
            raise UploadError(404, f"no {which!r} file: ask for original or protected")
        path = (job.originals if which == "original" else job.protected) / photo.name
        if which == "protected" and photo.status not in ("protected", "no_face"):
            raise UploadError(409 if not photo.finished else 404, f"{photo.name}: no protected photo ({photo.status})")
        if not path.is_file():
            raise UploadError(404, f"{photo.name}: no {which} file")
        fmt = (photo.record or {}).get("format")
        return FileResponse(path, media_type=MEDIA_TYPES.get(fmt), headers={
            "Content-Disposition": _attachment(photo.name, inline=not download), "Cache-Control": "no-store"})

    @app.post("/api/jobs/{job_id}/check")
    async def check(job_id: str, request: Request) -> dict:
        jobs = store(request)
        job = jobs.get(job_id)
        await jobs.check(job)
        return job.to_dict()

    @app.get("/api/jobs/{job_id}/download")
    async def download(job_id: str, request: Request, keep: bool = False) -> FileResponse:
        jobs = store(request)
        job = jobs.get(job_id)
        path = await asyncio.to_thread(jobs.build_zip, job, config.command)
        after = None if keep else BackgroundTask(jobs.remove, job)
        return FileResponse(path, media_type="application/zip", background=after,
                            headers={"Content-Disposition": _attachment("faceguard-protected.zip")})

    @app.delete("/api/jobs/{job_id}")
    async def delete(job_id: str, request: Request) -> dict:
        jobs = store(request)
        jobs.remove(jobs.get(job_id))
        return {"deleted": job_id}

    return app


async def _sweep(store: JobStore, ttl: float) -> None:
    """Remove expired jobs, checking a few times per time-to-live (at least once a minute)."""
    while True:
        await asyncio.sleep(min(max(ttl / 4, 0.05), 60.0))
        store.sweep()
