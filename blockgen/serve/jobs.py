"""Long documents as jobs: each job is a directory under the jobs directory, written by the writer one at a time.

A job's directory holds its record (job.json: the request, status, error), its outline when one was given, and
what the writer writes there itself: state.json after every paragraph, then document.md / .html / .json. The writer
already resumes from state.json, so a job survives a server restart: at start every job that was queued or running
is queued again and continues from its last saved paragraph. Progress events (the writer's plan, paragraph, image,
section and done events, and the job's status changes) go to every subscriber as they happen; when the server
stops, a `server` event ends their streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from blockgen.errors import BlockgenError, InvalidArgumentError
from blockgen.serve.protocol import DocumentRequest

log = logging.getLogger("blockgen.serve")

JOB_FILE = "job.json"
_ID = re.compile(r"^doc_[0-9a-f]{24}$")
FINAL = ("done", "failed")


class JobRecord(BaseModel):
    """What job.json holds: the request and where the job stands."""

    id: str
    status: Literal["queued", "running", "done", "failed"] = "queued"
    request: DocumentRequest
    outline_file: str | None = None  # name of the outline file in the job's directory
    created: float = Field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None


@dataclass(eq=False)
class Job:
    record: JobRecord
    directory: Path
    events: list[dict] = field(default_factory=list)  # this process's events, replayed to late subscribers
    listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = field(default_factory=list)

    def save(self) -> None:
        """Write job.json atomically (a crash leaves the old record or the new one)."""
        fd, tmp = tempfile.mkstemp(prefix=".job.", dir=self.directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.record.model_dump_json(indent=1))
        os.replace(tmp, self.directory / JOB_FILE)

    def progress(self) -> dict:
        """Words written so far, from the saved state (it survives restarts; events do not)."""
        state = self.directory / "state.json"
        try:
            saved = json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"words": 0, "paragraphs": 0, "sections": None}
        paragraphs = saved.get("paragraphs", [])
        return {"words": sum(p.get("words", 0) for p in paragraphs), "paragraphs": len(paragraphs),
                "sections": len(saved.get("outline", {}).get("sections", [])) or None}


class _Interrupted(Exception):
    """Raised from the writer's event callback when the server stops: the paragraph before it is saved."""


def _outline_file(outline: str | dict) -> tuple[str, str]:
    """(file name, text) for an outline given in a request: a JSON object, or JSON, Markdown or YAML text."""
    if isinstance(outline, dict):
        return "outline.json", json.dumps(outline)
    text = outline.strip()
    if text.startswith(("{", "[")):
        return "outline.json", text
    if any(line.lstrip().startswith("#") for line in text.splitlines()):
        return "outline.md", text
    return "outline.yaml", text


class JobStore:
    """The jobs under `root`, and the one thread that writes them in arrival order."""

    def __init__(self, root: str | Path, lm, *, image_model: str | None = None):
        self.root = Path(root)
        self.lm, self.image_model = lm, image_model
        self.jobs: dict[str, Job] = {}
        self._queue: Queue[str | None] = Queue()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blockgen-documents", daemon=True)

    # ---- lifecycle
    def start(self) -> None:
        """Load every job under root; queue again the ones a stopped server left unfinished; start writing."""
        self.root.mkdir(parents=True, exist_ok=True)
        unfinished = []
        for path in sorted(self.root.glob(f"*/{JOB_FILE}")):
            try:
                record = JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, ValidationError) as exc:
                log.warning("skipping unreadable job record %s (%s)", path, exc)
                continue
            job = Job(record, path.parent)
            self.jobs[record.id] = job
            if record.status not in FINAL:
                unfinished.append(job)
        for job in sorted(unfinished, key=lambda j: j.record.created):
            job.record.status = "queued"
            job.save()
            self._queue.put(job.record.id)
        if unfinished:
            log.info("resuming %d unfinished document jobs", len(unfinished))
        self._thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        """Stop after the paragraph being written (it is saved; the job resumes at the next start)."""
        self._stopping.set()
        self._queue.put(None)
        self.close_streams()
        if any(job.record.status == "running" for job in self.jobs.values()):
            log.info("waiting for the paragraph being written to be saved")
        if self._thread.is_alive():
            self._thread.join(timeout)

    def close_streams(self) -> None:
        """End every event stream with a `server` event (the server is stopping; the job resumes at the next
        start)."""
        for job in list(self.jobs.values()):
            if job.listeners:
                self._publish(job, {"type": "server", "status": "stopping", "job_status": job.record.status})

    # ---- requests
    def create(self, request: DocumentRequest) -> Job:
        """Validate a request (a 400 names the field), give it a directory and queue it."""
        from blockgen.document.writer import WriterConfig
        from blockgen.planners import load_outline

        options = dict(request.options)
        for name in ("images", "seed"):
            if name in options:
                raise InvalidArgumentError(f"options.{name}", options[name], f"give {name} at the top level")
        try:
            config = WriterConfig.build(**options)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"options.{exc.parameter}", exc.value, exc.reason) from None
        limit = self.lm.context_limit
        if config.context_tokens is not None and config.context_tokens > limit:
            raise InvalidArgumentError("options.context_tokens", config.context_tokens, f"above the model's trained "
                                       f"context ({limit}): the server shares the model's RoPE between requests")
        if request.images and self.image_model is None:
            raise InvalidArgumentError("images", request.images, "this server has no image model (start it with "
                                       "--image-model PATH)")
        job_id = f"doc_{uuid.uuid4().hex[:24]}"
        directory = self.root / job_id
        directory.mkdir(parents=True)
        record = JobRecord(id=job_id, request=request)
        if request.outline is not None:
            name, text = _outline_file(request.outline)
            (directory / name).write_text(text, encoding="utf-8")
            try:
                load_outline(directory / name, words=request.words, kind=request.kind)  # OutlineError: a 400
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            record.outline_file = name
        job = Job(record, directory)
        job.save()
        with self._lock:
            self.jobs[job_id] = job
        self._queue.put(job_id)
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id) if _ID.match(job_id) else None

    def subscribe(self, job: Job, loop: asyncio.AbstractEventLoop) -> tuple[list[dict], asyncio.Queue]:
        """The events so far and a queue that receives the next ones."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            job.listeners.append((loop, queue))
            return list(job.events), queue

    def unsubscribe(self, job: Job, queue: asyncio.Queue) -> None:
        with self._lock:
            job.listeners = [(lp, q) for lp, q in job.listeners if q is not queue]

    # ---- the writer's thread
    def _publish(self, job: Job, event: dict) -> None:
        with self._lock:
            job.events.append(event)
            listeners = list(job.listeners)
        for loop, queue in listeners:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that loop is closed: its subscriber is gone
                pass

    def _set_status(self, job: Job, status: str, error: str | None = None) -> None:
        job.record.status, job.record.error = status, error
        if status in FINAL:
            job.record.finished = time.time()
        job.save()
        self._publish(job, {"type": "status", "status": status, "error": error, **job.progress()})

    def _run(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                return
            # each job on a thread of its own: PyTorch's OpenMP workers for it go when it ends (see
            # Batcher.serve_forever for why their number matters)
            writer = threading.Thread(target=self._run_job, args=(self.jobs[job_id],), name=f"blockgen-{job_id}")
            writer.start()
            writer.join()

    def _run_job(self, job: Job) -> None:
        try:
            self._write(job)
        except _Interrupted:
            log.info("job %s stopped with the server; it resumes at the next start", job.record.id)
        except BlockgenError as exc:
            self._set_status(job, "failed", str(exc))
        except Exception as exc:  # the job fails, the server goes on
            log.exception("document job %s failed", job.record.id)
            self._set_status(job, "failed", f"internal error ({type(exc).__name__}); see the server's log")
        else:
            self._set_status(job, "done")

    def _write(self, job: Job) -> None:
        from blockgen.api import write_report, write_story

        request = job.record.request
        resume = (job.directory / "state.json").is_file()
        self._set_status(job, "running")

        def on_event(event) -> None:
            self._publish(job, {"type": event.kind, "section": event.section, "heading": event.heading,
                                "words": event.words, "target": event.target,
                                "paragraph_words": event.paragraph_words,
                                "tokens_per_second": round(event.tokens_per_second, 2)})
            if self._stopping.is_set():
                raise _Interrupted

        write = write_report if request.kind == "report" else write_story
        outline = job.directory / job.record.outline_file if job.record.outline_file else None
        extra = {"images": request.images} if request.images is not None else {}
        write(request.prompt, words=request.words, out=job.directory, model=self.lm, outline=outline, resume=resume,
              seed=request.seed, on_event=on_event, image_model=self.image_model, **extra, **request.options)
