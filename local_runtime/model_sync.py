"""Model folder sync between node agents over HTTP: resumable chunks, sha256-verified.

Mount on an agent with two lines::

    from local_runtime.model_sync import sync_routes
    routes += sync_routes(models_dir)          # models_dir/<model>/... are the model folders

Target side: ``POST /agent/v1/sync/offer`` (manifest in, missing chunks out: chunks already staged with
the right sha256 are not asked for again, so an interrupted sync resumes), ``PUT /agent/v1/sync/chunk``
(one chunk, checked against its sha256), ``POST /agent/v1/sync/commit`` (whole-file sha256s checked,
then the folder is moved into place). Source side: ``POST /agent/v1/sync/push`` starts a job that pushes
a folder to target agents; ``GET /agent/v1/sync/jobs[/{id}]`` shows bytes done / total and state;
``POST /agent/v1/sync/jobs/{id}/cancel``. The control plane drives these through ``/admin/sync/*``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CHUNK_SIZE = int(os.environ.get("ISTHMUS_SYNC_CHUNK_BYTES", str(4 * 2**20)))
_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,200}$")
_STAGING = ".incoming"


class SyncError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _model_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", "..", _STAGING):
        raise SyncError(400, f"invalid model name {name!r}")
    return name


def _inside(base: Path, rel: str) -> Path:
    target = (base / rel).resolve()
    if rel.startswith("/") or ".." in Path(rel).parts or not str(target).startswith(str(base.resolve()) + os.sep):
        raise SyncError(400, f"invalid file path {rel!r}")
    return target


def build_manifest(folder: Path, chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """Every file of ``folder`` with its size, sha256 and per-chunk sha256s (blocking: run in a thread)."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        whole, chunks, size = hashlib.sha256(), [], 0
        with path.open("rb") as fh:
            while block := fh.read(chunk_size):
                whole.update(block)
                chunks.append(hashlib.sha256(block).hexdigest())
                size += len(block)
        files.append({"path": path.relative_to(folder).as_posix(), "size": size, "sha256": whole.hexdigest(),
                      "chunks": chunks})
    return {"chunk_size": chunk_size, "files": files, "bytes_total": sum(f["size"] for f in files)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(2**20):
            digest.update(block)
    return digest.hexdigest()


# ---- target side ----------------------------------------------------------------------------------------
class Receiver:
    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir

    def staging(self, model: str) -> Path:
        return self.models_dir / _STAGING / model

    def _manifest(self, model: str) -> dict[str, Any]:
        path = self.staging(model) / ".manifest.json"
        if not path.is_file():
            raise SyncError(409, f"no sync offer for {model!r}: offer first")
        return dict(json.loads(path.read_text()))

    def offer(self, model: str, manifest: dict[str, Any]) -> dict[str, Any]:
        stage = self.staging(model)
        stage.mkdir(parents=True, exist_ok=True)
        size = int(manifest["chunk_size"])
        final = self.models_dir / model
        missing: dict[str, list[int]] = {}
        have = 0
        for f in manifest["files"]:
            rel = f["path"]
            staged, existing = _inside(stage, rel), _inside(final, rel)
            if existing.is_file() and file_sha256(existing) == f["sha256"]:
                # Already in place: link (or copy) it into staging so the commit publishes a whole folder.
                staged.parent.mkdir(parents=True, exist_ok=True)
                staged.unlink(missing_ok=True)
                try:
                    os.link(existing, staged)
                except OSError:
                    shutil.copyfile(existing, staged)
                have += f["size"]
                continue
            if staged.is_file() and staged.stat().st_nlink > 1:
                _unshare(staged)  # a link to a published file: chunks must never write through to it
            want = []
            with (staged.open("rb") if staged.is_file() else open(os.devnull, "rb")) as fh:
                for index, digest in enumerate(f["chunks"]):
                    fh.seek(index * size)
                    block = fh.read(size)
                    if block and hashlib.sha256(block).hexdigest() == digest:
                        have += len(block)
                    else:
                        want.append(index)
            if want or not f["chunks"]:
                missing[rel] = want
        (stage / ".manifest.json").write_text(json.dumps(manifest))
        return {"model": model, "missing": missing, "bytes_present": have}

    def chunk(self, model: str, rel: str, index: int, data: bytes, digest: str) -> dict[str, Any]:
        manifest = self._manifest(model)
        entry = next((f for f in manifest["files"] if f["path"] == rel), None)
        if entry is None or not 0 <= index < len(entry["chunks"]):
            raise SyncError(400, f"{rel!r} chunk {index} is not in the offer")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest or actual != entry["chunks"][index]:
            raise SyncError(422, f"{rel!r} chunk {index}: sha256 mismatch")
        path = _inside(self.staging(model), rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("r+b" if path.exists() else "wb") as fh:
            fh.seek(index * int(manifest["chunk_size"]))
            fh.write(data)
        return {"ok": True, "bytes": len(data)}

    def commit(self, model: str) -> dict[str, Any]:
        manifest = self._manifest(model)
        stage = self.staging(model)
        sums = {}
        for f in manifest["files"]:
            path = _inside(stage, f["path"])
            if not f["chunks"]:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            if path.is_file() and path.stat().st_size > f["size"]:
                with path.open("r+b") as fh:
                    fh.truncate(f["size"])  # a longer leftover from an older version of the file
            if not path.is_file() or file_sha256(path) != f["sha256"]:
                raise SyncError(409, f"{f['path']!r} is incomplete or does not match its sha256")
            sums[f["path"]] = f["sha256"]
        (stage / ".manifest.json").unlink()
        final = self.models_dir / model
        old = self.models_dir / _STAGING / f"{model}.old-{uuid.uuid4().hex[:6]}"
        if final.exists():
            final.rename(old)
        stage.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return {"ok": True, "model": model, "files": sums}


# ---- source side -------------------------------------------------------------------------------------------
@dataclass
class SyncJob:
    id: str
    model: str
    targets: list[dict[str, str]]
    state: str = "running"  # running | done | partial | failed | cancelled
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_sent: int = 0
    chunks_sent: int = 0
    chunks_skipped: int = 0
    error: str | None = None
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None

    def view(self) -> dict[str, Any]:
        return asdict(self)


class Pusher:
    def __init__(self, models_dir: Path, chunk_size: int = CHUNK_SIZE, token: str | None = None) -> None:
        self.models_dir = models_dir
        self.chunk_size = chunk_size
        self.token = token
        self.jobs: dict[str, SyncJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, job_id: str | None, model: str, targets: list[dict[str, str]],
                    limit_chunks: int | None = None) -> SyncJob:
        folder = self.models_dir / _model_name(model)
        if not folder.is_dir():
            raise SyncError(404, f"model {model!r} is not on this node")
        manifest = await run_in_threadpool(build_manifest, folder, self.chunk_size)
        job = SyncJob(id=job_id or f"sync-{uuid.uuid4().hex[:12]}", model=model, targets=targets,
                      bytes_total=manifest["bytes_total"] * len(targets))
        self.jobs[job.id] = job
        self._tasks[job.id] = asyncio.create_task(self._run(job, folder, manifest, limit_chunks))
        return job

    async def wait(self, job_id: str) -> SyncJob:
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        return self.jobs[job_id]

    def cancel(self, job_id: str) -> SyncJob:
        job = self.jobs[job_id]
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            job.state = "cancelled"
        return job

    async def _run(self, job: SyncJob, folder: Path, manifest: dict[str, Any], limit: int | None) -> None:
        import httpx

        budget = [limit]
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0), headers=headers) as client:
                for target in job.targets:
                    await self._push_one(client, job, folder, manifest, target, budget)
            job.state = "partial" if budget[0] is not None and budget[0] <= 0 and job.bytes_done < job.bytes_total \
                else "done"
        except asyncio.CancelledError:
            job.state = "cancelled"
        except Exception as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = datetime.now(UTC).isoformat()

    async def _push_one(self, client: Any, job: SyncJob, folder: Path, manifest: dict[str, Any],
                        target: dict[str, str], budget: list[int | None]) -> None:
        base = target["base_url"].rstrip("/")
        name = target.get("node_id") or base
        progress = job.per_target.setdefault(name, {"state": "running", "bytes_done": 0, "chunks_sent": 0})
        resp = await client.post(f"{base}/agent/v1/sync/offer", json={"model": job.model, "manifest": manifest})
        resp.raise_for_status()
        missing: dict[str, list[int]] = resp.json()["missing"]
        size = manifest["chunk_size"]
        for f in manifest["files"]:
            wanted = set(missing.get(f["path"], []))
            skipped = len(f["chunks"]) - len(wanted) if f["path"] in missing else len(f["chunks"])
            job.chunks_skipped += skipped
            done_here = f["size"] - sum(min(size, f["size"] - i * size) for i in wanted)
            job.bytes_done += done_here
            progress["bytes_done"] += done_here
            for index in sorted(wanted):
                if budget[0] is not None and budget[0] <= 0:
                    progress["state"] = "partial"
                    return
                data = await run_in_threadpool(_read_chunk, folder / f["path"], index, size)
                put = await client.put(f"{base}/agent/v1/sync/chunk", content=data,
                                       params={"model": job.model, "path": f["path"], "index": index},
                                       headers={"x-chunk-sha256": hashlib.sha256(data).hexdigest()})
                put.raise_for_status()
                job.chunks_sent += 1
                job.bytes_sent += len(data)
                job.bytes_done += len(data)
                progress["bytes_done"] += len(data)
                progress["chunks_sent"] += 1
                if budget[0] is not None:
                    budget[0] -= 1
        done = await client.post(f"{base}/agent/v1/sync/commit", json={"model": job.model})
        done.raise_for_status()
        progress.update(state="done", sha256=done.json()["files"])


def _unshare(path: Path) -> None:
    private = path.with_name(path.name + ".unshare")
    shutil.copyfile(path, private)
    os.replace(private, path)


def _read_chunk(path: Path, index: int, size: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(index * size)
        return fh.read(size)


# ---- routes -----------------------------------------------------------------------------------------------
def sync_routes(models_dir: str | Path, chunk_size: int = CHUNK_SIZE, token: str | None = None) -> list[Route]:
    """The ``/agent/v1/sync/*`` routes for an agent whose model folders live under ``models_dir``.

    ``token`` (default: ``ISTHMUS_ENROLL_TOKEN``, the secret agents and the control plane share) is required
    as ``Authorization: Bearer`` on every sync route when set, and sent to the targets by the pusher.
    """
    secret = token if token is not None else os.environ.get("ISTHMUS_ENROLL_TOKEN") or ""
    receiver = Receiver(Path(models_dir))
    pusher = Pusher(Path(models_dir), chunk_size, secret or None)

    def guarded(fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if secret:
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), secret.encode()):
                    return JSONResponse({"detail": "sync token required"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
            try:
                return JSONResponse(await fn(request))
            except SyncError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=exc.status)
            except (KeyError, ValueError, TypeError) as exc:
                return JSONResponse({"detail": f"bad request: {exc}"}, status_code=400)
        return endpoint

    async def offer(request: Request) -> dict[str, Any]:
        body = await request.json()
        return await run_in_threadpool(receiver.offer, _model_name(body["model"]), body["manifest"])

    async def chunk(request: Request) -> dict[str, Any]:
        q = request.query_params
        return await run_in_threadpool(receiver.chunk, _model_name(q["model"]), q["path"], int(q["index"]),
                                       await request.body(), request.headers.get("x-chunk-sha256", ""))

    async def commit(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(receiver.commit, _model_name((await request.json())["model"]))

    async def push(request: Request) -> dict[str, Any]:
        body = await request.json()
        targets = [{"node_id": str(t.get("node_id", "")), "base_url": str(t["base_url"])} for t in body["targets"]]
        job = await pusher.start(body.get("job_id"), body["model"], targets, body.get("limit_chunks"))
        return job.view()

    async def jobs(request: Request) -> dict[str, Any]:
        return {"jobs": [j.view() for j in pusher.jobs.values()]}

    async def job(request: Request) -> dict[str, Any]:
        found = pusher.jobs.get(request.path_params["job_id"])
        if found is None:
            raise SyncError(404, "no such sync job")
        return found.view()

    async def cancel(request: Request) -> dict[str, Any]:
        if request.path_params["job_id"] not in pusher.jobs:
            raise SyncError(404, "no such sync job")
        return pusher.cancel(request.path_params["job_id"]).view()

    return [
        Route("/agent/v1/sync/offer", guarded(offer), methods=["POST"]),
        Route("/agent/v1/sync/chunk", guarded(chunk), methods=["PUT"]),
        Route("/agent/v1/sync/commit", guarded(commit), methods=["POST"]),
        Route("/agent/v1/sync/push", guarded(push), methods=["POST"]),
        Route("/agent/v1/sync/jobs", guarded(jobs), methods=["GET"]),
        Route("/agent/v1/sync/jobs/{job_id}", guarded(job), methods=["GET"]),
        Route("/agent/v1/sync/jobs/{job_id}/cancel", guarded(cancel), methods=["POST"]),
    ]
