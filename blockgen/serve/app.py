"""The HTTP face: OpenAI's /v1/models, /v1/completions and /v1/chat/completions, and /v1/documents for long
documents as jobs, over one loaded model.

Requests are validated here (protocol.py), encoded to token ids, and handed to the batcher as rows; their updates
come back on an asyncio queue and leave as one JSON body or as server-sent events ending in `data: [DONE]`. A
streaming client that goes away cancels its rows (they retire from their batch at the next pass); a waiting
non-streaming one is noticed within half a second.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.sse import format_sse_event

from blockgen.engine import GenerationConfig
from blockgen.serve.batcher import Batcher, Row, Update
from blockgen.serve.errors import APIError, install
from blockgen.serve.gate import FairGate, gated_model
from blockgen.serve.jobs import FINAL, Job, JobStore
from blockgen.serve.protocol import ChatCompletionRequest, CompletionRequest, DocumentRequest

# max_tokens when a request gives none (OpenAI: 16 for completions; chat until the context ends, here a cap)
DEFAULT_MAX_TOKENS = {"completion": 16, "chat": 512}
_POLL_SECONDS = 0.5  # how often a waiting non-streaming request checks that its client is still there
_KEEPALIVE_SECONDS = 15.0  # a comment line on a quiet document event stream


class Ticket:
    """The rows of one request and the queue their updates arrive on (from the batcher's thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()
        self.rows: list[Row] = []

    def emitter(self, index: int):
        def emit(update: Update) -> None:
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, update))
            except RuntimeError:  # the event loop is closed: the server is going away
                pass

        return emit

    def cancel(self) -> None:
        for row in self.rows:
            row.cancel()

    async def updates(self, request: Request | None = None) -> AsyncIterator[tuple[int, Update]]:
        """(choice index, update) until every row has finished; with `request`, cancel when its client leaves."""
        open_rows = len(self.rows)
        checked = time.monotonic()
        while open_rows:
            try:
                index, update = await asyncio.wait_for(self.queue.get(), _POLL_SECONDS if request else None)
            except TimeoutError:
                index, update = None, None
            if request is not None and time.monotonic() - checked >= _POLL_SECONDS:
                checked = time.monotonic()
                if await request.is_disconnected():
                    self.cancel()
                    return
            if update is None:
                continue
            if update.error is not None:
                self.cancel()
                raise update.error
            if update.finish_reason is not None:
                open_rows -= 1
            yield index, update


class _EventStream(StreamingResponse):
    """Server-sent events; `on_close` runs however the response ends (finished, or the client went away)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], on_close):
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _sse(data: dict | str) -> bytes:
    return format_sse_event(data_str=data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))


class Server:
    """What the routes share: the model, its batcher and the document jobs."""

    def __init__(self, lm, *, model_name: str, api_key: str | None, jobs_dir: str | Path, max_batch: int,
                 image_model: str | None):
        self.lm, self.model_name, self.api_key = lm, model_name, api_key
        self.created = int(time.time())
        self.gate = FairGate()
        self.batcher = Batcher(lm, self.gate, max_batch=max_batch)
        self.jobs = JobStore(jobs_dir, gated_model(lm, self.gate), image_model=image_model)

    def start(self, decode_thread: bool = True) -> None:
        if decode_thread:
            self.batcher.start()
        self.jobs.start()

    def stop(self) -> None:
        self.jobs.stop()
        self.batcher.stop()

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    def config(self, body, prompt_tokens: list[int], kind: str, field: str) -> GenerationConfig:
        """The request's options, validated by GenerationConfig and checked against the model and its context."""
        length = body.length if isinstance(body, ChatCompletionRequest) else body.max_tokens
        config = GenerationConfig.build(**body.generation_options(length or 1))
        if length is None:  # the default, shortened to what fits after the longest prompt
            room = self.lm.context_limit - max(prompt_tokens) - config.block_for(self.lm.family)
            config = GenerationConfig.build(**body.generation_options(max(1, min(DEFAULT_MAX_TOKENS[kind], room))))
        self.batcher.check(config, max(prompt_tokens), field)
        return config

    def submit(self, prompts: list[list[int]], config: GenerationConfig, n: int) -> Ticket:
        """Queue n rows per prompt; choice index = prompt index * n + j."""
        ticket = Ticket(asyncio.get_running_loop())
        key = self.batcher.key_for(config)
        for i, prompt in enumerate(prompts):
            for j in range(n):
                ticket.rows.append(Row(prompt, config, ticket.emitter(i * n + j), key))
        self.batcher.submit(ticket.rows)
        return ticket


def _usage(prompts: list[list[int]], tokens: dict[int, int]) -> dict:
    prompt = sum(map(len, prompts))
    completion = sum(tokens.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _collect(ticket, request: Request) -> tuple[dict, dict, dict] | None:
    """A non-streamed answer: (texts, finish reasons, token counts) by choice index, or None when the client went
    away before every choice finished."""
    texts, reasons, tokens = {}, {}, {}
    async for index, update in ticket.updates(request):
        texts[index] = texts.get(index, "") + update.text
        tokens[index] = update.tokens
        if update.finish_reason:
            reasons[index] = update.finish_reason
    return (texts, reasons, tokens) if len(reasons) == len(ticket.rows) else None


def create_app(lm, *, model_name: str | None = None, api_key: str | None = None,
               jobs_dir: str | Path = "blockgen-jobs", max_batch: int = 32, image_model: str | None = None,
               decode_thread: bool = True) -> FastAPI:
    """The ASGI app over a loaded model. model_name: the id clients ask for (default: the model's name); api_key:
    when set, /v1 requires `Authorization: Bearer <api_key>`; jobs_dir: where document jobs live (unfinished ones
    resume when the app starts); max_batch: rows decoded together at most. decode_thread=False leaves decoding to
    the caller (`app.state.server.batcher.serve_forever()`, as `run` does)."""
    from contextlib import asynccontextmanager

    server = Server(lm, model_name=model_name or lm.name, api_key=api_key, jobs_dir=jobs_dir, max_batch=max_batch,
                    image_model=image_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.start(decode_thread)
        try:
            yield
        finally:
            await asyncio.to_thread(server.stop)

    async def authorized(request: Request) -> None:
        if server.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), server.api_key.encode()):
            raise APIError(401, "missing or incorrect API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    app = FastAPI(title="blockgen", summary="OpenAI-compatible server over a blockgen model", lifespan=lifespan)
    app.state.server = server
    install(app)
    v1 = Depends(authorized)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": server.model_name, **server.batcher.stats.as_dict(),
                "waiting_rows": server.batcher.pending}

    def model_card() -> dict:
        return {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "blockgen"}

    @app.get("/v1/models", dependencies=[v1])
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}", dependencies=[v1])
    async def model(name: str) -> dict:
        server.check_model(name)
        return model_card()

    @app.post("/v1/completions", dependencies=[v1])
    async def completions(body: CompletionRequest, request: Request):
        server.check_model(body.model)
        body.refuse_unsupported()
        prompts = [server.lm.encode(p) for p in body.prompts()]
        config = server.config(body, [len(p) for p in prompts], "completion", "prompt")
        ticket = server.submit(prompts, config, body.n)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": server.model_name}

        def choice(index: int, text: str, reason: str | None) -> dict:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}

        if body.stream:
            async def events() -> AsyncIterator[bytes]:
                tokens = {}
                try:
                    async for index, update in ticket.updates():
                        tokens[index] = update.tokens
                        if update.text or update.finish_reason:
                            chunk = head | {"choices": [choice(index, update.text, update.finish_reason)]}
                            yield _sse(chunk | ({"usage": None} if body.include_usage else {}))
                except Exception as exc:  # the batch failed after the stream began: say so in the stream
                    yield _sse(_stream_error(exc))
                    return
                if body.include_usage:
                    yield _sse(head | {"choices": [], "usage": _usage(prompts, tokens)})
                yield _sse("[DONE]")

            return _EventStream(events(), ticket.cancel)
        collected = await _collect(ticket, request)
        if collected is None:
            return Response(status_code=499)  # the client went away
        texts, reasons, tokens = collected
        choices = [choice(i, texts.get(i, ""), reasons[i]) for i in sorted(reasons)]
        return head | {"choices": choices, "usage": _usage(prompts, tokens)}

    @app.post("/v1/chat/completions", dependencies=[v1])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        server.check_model(body.model)
        body.refuse_unsupported()
        prompt = server.lm.encode(body.template_messages(), chat=True)
        config = server.config(body, [len(prompt)], "chat", "messages")
        ticket = server.submit([prompt], config, body.n)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": server.model_name,
                "system_fingerprint": None}

        if body.stream:
            head = head | {"object": "chat.completion.chunk"}

            def chunk(index: int, delta: dict, reason: str | None) -> bytes:
                data = head | {"choices": [{"index": index, "delta": delta, "logprobs": None,
                                            "finish_reason": reason}]}
                return _sse(data | ({"usage": None} if body.include_usage else {}))

            async def events() -> AsyncIterator[bytes]:
                tokens = {}
                for index in range(body.n):
                    yield chunk(index, {"role": "assistant", "content": ""}, None)
                try:
                    async for index, update in ticket.updates():
                        tokens[index] = update.tokens
                        if update.text:
                            yield chunk(index, {"content": update.text}, None)
                        if update.finish_reason:
                            yield chunk(index, {}, update.finish_reason)
                except Exception as exc:  # as in completions: the error goes into the stream
                    yield _sse(_stream_error(exc))
                    return
                if body.include_usage:
                    yield _sse(head | {"choices": [], "usage": _usage([prompt], tokens)})
                yield _sse("[DONE]")

            return _EventStream(events(), ticket.cancel)
        collected = await _collect(ticket, request)
        if collected is None:
            return Response(status_code=499)
        texts, reasons, tokens = collected
        choices = [{"index": i, "message": {"role": "assistant", "content": texts.get(i, "")}, "logprobs": None,
                    "finish_reason": reasons[i]} for i in sorted(reasons)]
        return head | {"object": "chat.completion", "choices": choices, "usage": _usage([prompt], tokens)}

    # ---- documents
    def job_or_404(job_id: str) -> Job:
        job = server.jobs.get(job_id)
        if job is None:
            raise APIError(404, f"no document job {job_id!r}", param="id", code="not_found")
        return job

    def job_view(job: Job) -> dict:
        record = job.record
        return {"id": record.id, "object": "document", "status": record.status, "created": int(record.created),
                "finished": int(record.finished) if record.finished else None, "error": record.error,
                "kind": record.request.kind, "prompt": record.request.prompt, "target_words": record.request.words,
                **job.progress()}

    @app.post("/v1/documents", dependencies=[v1], status_code=202)
    async def create_document(body: DocumentRequest) -> dict:
        server.check_model(body.model)
        job = await asyncio.to_thread(server.jobs.create, body)
        return job_view(job) | {"events": f"/v1/documents/{job.record.id}/events"}

    @app.get("/v1/documents", dependencies=[v1])
    async def list_documents() -> dict:
        jobs = sorted(server.jobs.jobs.values(), key=lambda j: j.record.created)
        return {"object": "list", "data": [job_view(job) for job in jobs]}

    _FORMATS = {"markdown": ("document.md", "text/markdown; charset=utf-8"),
                "html": ("document.html", "text/html; charset=utf-8"),
                "json": ("document.json", "application/json")}

    @app.get("/v1/documents/{job_id}", dependencies=[v1])
    async def get_document(job_id: str, format: str | None = None):
        job = job_or_404(job_id)
        if format is not None and format not in _FORMATS:
            raise APIError(400, f"format={format!r}: must be one of {sorted(_FORMATS)}", param="format",
                           code="invalid_value")
        view = job_view(job)
        if job.record.status != "done":
            if format is not None:
                raise APIError(409, f"the document is not finished (status {job.record.status})", param="id",
                               code="not_ready")
            return view
        outputs = {name: (job.directory / file).read_text(encoding="utf-8") for name, (file, _) in _FORMATS.items()}
        if format is not None:
            return PlainTextResponse(outputs[format], media_type=_FORMATS[format][1])
        return view | {"markdown": outputs["markdown"], "html": outputs["html"], "json": json.loads(outputs["json"])}

    @app.get("/v1/documents/{job_id}/events", dependencies=[v1])
    async def document_events(job_id: str):
        job = job_or_404(job_id)
        past, queue = server.jobs.subscribe(job, asyncio.get_running_loop())

        async def events() -> AsyncIterator[bytes]:
            yield _sse({"type": "status", "status": job.record.status, "error": job.record.error, **job.progress()})
            if job.record.status in FINAL:
                return
            for event in past:
                yield _sse(event)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), _KEEPALIVE_SECONDS)
                except TimeoutError:  # a paragraph can take a while on a CPU: keep proxies from closing the stream
                    yield format_sse_event(comment="keepalive")
                    continue
                yield _sse(event)
                if event["type"] == "server" or (event["type"] == "status" and event["status"] in FINAL):
                    return

        return _EventStream(events(), lambda: server.jobs.unsubscribe(job, queue))

    return app


def _stream_error(exc: Exception) -> dict:
    from blockgen.serve.errors import from_exception

    return from_exception(exc).body()


def run(lm, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **options) -> None:
    """Serve `lm` until interrupted (Ctrl-C or SIGTERM); options: create_app's.

    uvicorn serves HTTP from a thread while the calling thread, which loaded the model, decodes (see
    Batcher.serve_forever for why that thread)."""
    import signal
    import threading

    import uvicorn

    from blockgen.errors import BlockgenError

    app = create_app(lm, decode_thread=False, **options)
    http = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=http.run, name="blockgen-http", daemon=True)
    thread.start()
    while not http.started:
        if not thread.is_alive():
            raise BlockgenError(f"could not serve on {host}:{port} (see the log above)")
        time.sleep(0.05)

    server = app.state.server

    def shut() -> None:  # end the open streams first (uvicorn waits for them before it shuts the app down)
        server.jobs.close_streams()
        server.batcher.stop()

    stopping = threading.Event()

    def interrupt(signum, frame):
        """The first Ctrl-C or SIGTERM stops the batcher from a thread of its own: raised here, a KeyboardInterrupt
        could land between a lock's acquire and its release in the decoding thread and leave the stop waiting on it.
        A second one stops at once."""
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()
        threading.Thread(target=shut, name="blockgen-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.batcher.serve_forever()  # returns once stopped
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not stopping.is_set():  # (once stopped by a signal, the streams were ended before serve_forever returned)
            shut()
        http.should_exit = True
        thread.join(60)

