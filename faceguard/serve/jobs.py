"""Jobs of ``faceguard serve``: photos uploaded together, protected one by one in the worker pool,
checked with ``faceguard check`` and downloaded alone or as a zip with their manifest.

Every job lives in its own folder inside the server's temporary folder::

    ROOT/jobs/ID/incoming/   uploads being received (a .part file each)
    ROOT/jobs/ID/originals/  accepted uploads under their safe names
    ROOT/jobs/ID/protected/  what the workers wrote, same names and formats
    ROOT/jobs/ID/download.zip

A job is removed (folder and all) when its zip is downloaded, when it is deleted, when it has not
been used for :attr:`Limits.job_ttl` seconds (its queued photos are cancelled), and when the server
stops. A photo's status is ``queued``, ``protecting`` (handed to a worker), then ``protected``,
``no_face`` (kept unchanged, as ``faceguard protect`` copies it) or ``error`` with a one-line reason.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from faceguard.serve.pool import WorkerPool
from faceguard.serve.uploads import Form, Limits, Upload, UploadError, check_photo, unique_name
from faceguard.settings import DEFAULT_STRENGTH
from recognition.files import one_line, write_atomic

FINISHED = ("protected", "no_face", "error")
ZIP = "download.zip"
MANIFEST = "manifest.json"


@dataclass(eq=False)
class JobPhoto:
    """One photo of a job: its index, safe name (also its output name), size, outcome and record."""

    index: int
    name: str
    size: int = 0
    status: str = "queued"
    reason: str = ""
    record: dict | None = None
    future: object | None = None  # the worker call (a concurrent.futures.Future) while unfinished
    task: asyncio.Task | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict:
        status = self.status
        if status == "queued" and self.future is not None and self.future.running():
            status = "protecting"
        return {"index": self.index, "name": self.name, "size": self.size, "status": status,
                "reason": self.reason, "record": self.record}


@dataclass(eq=False)
class Job:
    """Photos protected with one method, ε and strength, in one folder; ``identities`` is how the check groups
    them into people (``single``: all one person; ``folders``: sub-folders are people)."""

    id: str
    folder: Path
    method: str
    eps: float
    strength: str = DEFAULT_STRENGTH
    identities: str = "single"
    photos: list[JobPhoto] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    created: float = field(default_factory=time.monotonic)
    touched: float = field(default_factory=time.monotonic)
    check: dict | None = None
    check_status: str = "none"  # none, running, done, error
    settings: dict | None = None  # the manifest settings, from the first photo a worker protected

    @property
    def incoming(self) -> Path:
        return self.folder / "incoming"

    @property
    def originals(self) -> Path:
        return self.folder / "originals"

    @property
    def protected(self) -> Path:
        return self.folder / "protected"

    @property
    def done(self) -> bool:
        return all(photo.finished for photo in self.photos)

    def to_dict(self) -> dict:
        """The job as ``GET /api/jobs/ID`` returns it."""
        photos = [photo.to_dict() for photo in self.photos]
        counts = {status: sum(p["status"] == status for p in photos)
                  for status in ("queued", "protecting", *FINISHED)}
        seconds = [p["record"]["seconds"] for p in photos if p["record"] and "seconds" in p["record"]]
        return {"id": self.id, "method": self.method, "eps": self.eps, "strength": self.strength,
                "identities": self.identities,
                "done": self.done, "counts": counts, "photos": photos,
                "seconds_per_photo": round(sum(seconds) / len(seconds), 2) if seconds else None,
                "check_status": self.check_status, "check": self.check}


class JobStore:
    """All jobs of one server, under ``root``; protection and checks go to ``pool``."""

    def __init__(self, root: Path, pool: WorkerPool, limits: Limits) -> None:
        self.root, self.pool, self.limits = Path(root), pool, limits
        self.jobs: dict[str, Job] = {}

    def create(self, method: str, eps: float, strength: str = DEFAULT_STRENGTH, identities: str = "single") -> Job:
        """A new empty job with its folders."""
        job_id = secrets.token_urlsafe(12)
        job = Job(job_id, self.root / "jobs" / job_id, method, eps, strength, identities)
        for folder in (job.incoming, job.originals, job.protected):
            folder.mkdir(parents=True)
        self.jobs[job_id] = job
        return job

    def get(self, job_id: str) -> Job:
        """The job (its expiry clock restarted); 404 when there is none (expired or downloaded)."""
        job = self.jobs.get(job_id)
        if job is None:
            raise UploadError(404, f"no job {job_id!r} (it finished downloading, was deleted or expired)")
        job.touched = time.monotonic()
        return job

    def photo(self, job: Job, index: int) -> JobPhoto:
        if not 0 <= index < len(job.photos):
            raise UploadError(404, f"job {job.id} has no photo {index}")
        return job.photos[index]

    def add_all(self, job: Job, form: Form) -> list[JobPhoto]:
        """Accept or refuse every uploaded photo of ``form`` (refused ones become ``error`` entries);
        raises the refusal when the form held one photo and it was refused, or none."""
        if not form.files:
            raise UploadError(400, "no photo: send one or more files in the 'photo' field")
        added, refusals = [], []
        for upload in form.files:
            try:
                added.append(self.add(job, upload))
            except UploadError as refused:
                refusals.append(refused)
                added.append(self._refused(job, upload, refused.message))
        if len(refusals) == len(form.files):
            raise refusals[0]
        return added

    def _refused(self, job: Job, upload: Upload, reason: str) -> JobPhoto:
        """Drop a refused upload's bytes and record it as an ``error`` photo of the job (the page shows it)."""
        upload.path.unlink(missing_ok=True)
        photo = JobPhoto(len(job.photos), unique_name(upload.name, job.taken), upload.size, "error", reason)
        job.photos.append(photo)
        return photo

    def add(self, job: Job, upload: Upload) -> JobPhoto:
        """Check one upload (name, bytes, megapixels, readable header), move it to ``originals`` under
        a unique safe name and queue its protection; :class:`UploadError` when it is refused."""
        if len(job.photos) >= self.limits.max_job_photos:
            raise UploadError(413, f"{upload.name}: job {job.id} already has {self.limits.max_job_photos} photos")
        if self.pool.pending >= self.limits.max_queue:
            raise UploadError(503, f"{upload.name}: the server is busy ({self.pool.pending} photos queued); "
                                   "try again later")
        check_photo(upload, self.limits)
        photo = JobPhoto(len(job.photos), unique_name(upload.name, job.taken), upload.size)
        source = job.originals / photo.name
        source.parent.mkdir(parents=True, exist_ok=True)
        upload.path.replace(source)
        job.photos.append(photo)
        (job.protected / photo.name).parent.mkdir(parents=True, exist_ok=True)
        photo.future = self.pool.submit_future("protect_file", str(source), str(job.protected / photo.name),
                                               job.method, job.eps, job.strength)
        photo.task = asyncio.get_running_loop().create_task(self._finish(job, photo))
        return photo

    async def _finish(self, job: Job, photo: JobPhoto) -> None:
        """Record the worker's outcome of ``photo`` (a cancelled or failed call is an error) and
        keep the first manifest settings a worker reports."""
        try:
            entry = await asyncio.wrap_future(photo.future)
        except asyncio.CancelledError:
            entry = {"status": "error", "reason": "cancelled before it was protected"}
        except Exception as exc:  # the worker process died
            entry = {"status": "error", "reason": f"the worker failed: {one_line(exc)}"}
        settings = entry.pop("settings", None)
        if settings is not None and job.settings is None:
            job.settings = settings
        photo.record = {"input": photo.name, "output": photo.name, **entry}
        photo.status, photo.reason, photo.future = entry["status"], entry.get("reason", ""), None
        said = f": {photo.reason}" if photo.reason else ""
        print(f"serve: job {job.id} photo {photo.index} ({photo.name}) {photo.status}{said} "
              f"in {entry.get('seconds', '?')} s", file=sys.stderr, flush=True)

    async def check(self, job: Job) -> dict:
        """Run ``faceguard check`` on the job's finished photos (409 while photos are still queued)."""
        if not job.done:
            raise UploadError(409, f"job {job.id} still has photos being protected; check when all are done")
        if not any(photo.status == "protected" for photo in job.photos):
            raise UploadError(409, f"job {job.id} has no protected photo to check")
        job.check_status = "running"
        try:
            job.check = await self.pool.run("check", str(job.originals), str(job.protected), job.identities)
            job.check_status = "done"
        except Exception as exc:
            job.check, job.check_status = {"error": one_line(exc)}, "error"
        return job.check

    def build_zip(self, job: Job, command: str) -> Path:
        """``download.zip`` of the job: every protected or unchanged (no face) photo under its name,
        and ``manifest.json`` (settings, one entry per photo, the check when it was run)."""
        from faceguard.protect.manifest import VERSION

        if not job.done:
            raise UploadError(409, f"job {job.id} still has photos being protected; download when all are done")
        kept = [photo for photo in job.photos if photo.status in ("protected", "no_face")]
        if not kept:
            raise UploadError(409, f"job {job.id} has no photo to download")
        settings = {**(job.settings or {"method": job.method, "eps": job.eps, "strength": job.strength}),
                    "identities": job.identities}
        manifest = {"version": VERSION, "command": command, "settings": settings,
                    "files": {photo.name: photo.record or {"status": photo.status, "reason": photo.reason}
                              for photo in job.photos}, "check": job.check}

        def write(handle: object) -> None:
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:  # photos are compressed already
                for photo in kept:
                    archive.write(job.protected / photo.name, photo.name)
                archive.writestr(MANIFEST, json.dumps(manifest, indent=1) + "\n")

        return write_atomic(job.folder / ZIP, write)

    def remove(self, job: Job) -> None:
        """Forget the job, cancel its queued photos and delete its folder."""
        self.jobs.pop(job.id, None)
        for photo in job.photos:
            if photo.future is not None and not photo.future.cancel():  # already in a worker:
                # its output is written after this, so remove the folder again once it is
                photo.future.add_done_callback(lambda _, folder=job.folder: shutil.rmtree(folder, ignore_errors=True))
        shutil.rmtree(job.folder, ignore_errors=True)

    def sweep(self, now: float | None = None) -> int:
        """Remove every job unused for longer than the limit's ``job_ttl``; how many were removed."""
        now = time.monotonic() if now is None else now
        expired = [job for job in self.jobs.values() if now - job.touched > self.limits.job_ttl]
        for job in expired:
            self.remove(job)
        return len(expired)

    def close(self) -> None:
        """Remove every job (the server is stopping)."""
        for job in list(self.jobs.values()):
            self.remove(job)
