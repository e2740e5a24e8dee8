"""LangChain integration: a completion LLM, a chat model, and a runnable (and agent tool) that writes a document.

Construction is cheap and does no I/O: weights load on the first generation and are shared, per (model, device,
dtype), by every instance in the process. Generation on one loaded model is serialized (LangChain's `batch` runs
calls in threads; a model's RoPE factor is set per call).

Tool calling and structured output are not offered: the standard capability flags say so (`bind_tools` and
`with_structured_output` are not overridden) rather than pretending with a model that cannot follow a schema.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun, dispatch_custom_event
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.llms import LLM
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.outputs import GenerationChunk as LCGenerationChunk
from langchain_core.runnables import RunnableConfig, RunnableLambda
from pydantic import BaseModel, ConfigDict, Field, model_validator

_LOADED: dict[tuple[str, str, str], tuple[Any, threading.Lock]] = {}
_LOADING = threading.Lock()

# options a call may pass through (LangChain's names on the left, GenerationConfig's on the right; LangChain's own
# `cache` is its response cache, so the KV cache mode is `kv_cache` here)
_CALL_OPTIONS = {"max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                 "seed": "seed", "block_size": "block_size", "steps": "steps", "scheduler": "scheduler",
                 "threshold": "threshold", "repetition_penalty": "repetition_penalty",
                 "dry_multiplier": "dry_multiplier", "kv_cache": "cache"}
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool", "function": "tool"}


def loaded_model(name: str = "default", device: str = "auto", dtype: str = "auto"):
    """The process-wide LoadedModel for (name, device, dtype) and the lock that serializes documents written with it
    (one long job at a time on a model)."""
    key = (str(name), str(device), str(dtype))
    with _LOADING:
        if key not in _LOADED:
            from blockgen.runtime import load

            _LOADED[key] = (load(name, device=device, dtype=dtype), threading.Lock())
        return _LOADED[key]


class _Settings(BaseModel):
    """Generation settings shared by the LLM and the chat model (LangChain's standard names first). Their values are
    checked by GenerationConfig, where each is declared, when the model is made."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model: str = Field("default", description="'default', a checkpoint directory or a .gguf file")
    device: str = "auto"
    dtype: str = "auto"
    temperature: float | None = None
    max_tokens: int | None = 256
    stop: list[str] | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    timeout: float | None = Field(None, description="accepted for the standard interface; local calls run to the end")
    max_retries: int = Field(2, ge=0, description="accepted for the standard interface; nothing to retry locally")
    block_size: int | None = None
    steps: int | None = None
    scheduler: str | None = None
    threshold: float | None = None
    repetition_penalty: float | None = None
    dry_multiplier: float | None = Field(None, description="DRY's penalty on tokens that would repeat earlier text")
    kv_cache: str | None = Field(None, description="blockgen's KV cache mode (LangChain's `cache` is its response "
                                 "cache)")
    client: Any = Field(None, exclude=True, description="an already loaded blockgen model to use instead of `model`")

    @model_validator(mode="after")
    def _valid_options(self):
        from blockgen.engine import GenerationConfig
        from blockgen.errors import InvalidArgumentError

        options = self._options(None, {})
        try:
            GenerationConfig.build(**options)
        except InvalidArgumentError as exc:  # name the field as this class calls it
            names = {v: k for k, v in _CALL_OPTIONS.items()}
            raise InvalidArgumentError(names.get(exc.parameter, exc.parameter), exc.value, exc.reason) from None
        return self

    def _lm(self):
        if self.client is not None:
            return self.client, _client_lock(self.client)
        return loaded_model(self.model, self.device, self.dtype)

    def _options(self, stop: list[str] | None, kwargs: dict) -> dict:
        values = {name: getattr(self, name) for name in _CALL_OPTIONS}
        values.update({k: v for k, v in kwargs.items() if k in _CALL_OPTIONS})
        options = {_CALL_OPTIONS[k]: v for k, v in values.items() if v is not None}
        stops = [*(self.stop or []), *(stop or [])]
        if stops:
            options["stop"] = tuple(dict.fromkeys(stops))
        return options

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        """The model and every option that is set (LangChain's cache key and tracing parameters)."""
        return {"model": self.model, **{k: getattr(self, k) for k in _CALL_OPTIONS if getattr(self, k) is not None}}


_CLIENT_LOCKS: dict[int, threading.Lock] = {}


def _client_lock(client) -> threading.Lock:
    with _LOADING:
        return _CLIENT_LOCKS.setdefault(id(client), threading.Lock())


def _stream_text(settings: _Settings, prompt, chat: bool, stop, kwargs) -> Iterator[Any]:
    """blockgen's GenerationChunks for one prompt. No lock is held across a yield: a decode keeps its state (cache,
    RoPE factor) to itself, so streams may interleave, and one a caller abandons blocks no other."""
    lm, _ = settings._lm()
    options = settings._options(stop, kwargs)
    yield from lm.stream(prompt, chat=chat, **options)


class BlockgenLLM(_Settings, LLM):
    """A completion model: the prompt is continued as raw text (no chat template)."""

    @property
    def _llm_type(self) -> str:
        return "blockgen"

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[LCGenerationChunk]:
        for piece in _stream_text(self, prompt, False, stop, kwargs):
            info = None
            if piece.finish_reason is not None:
                info = {"finish_reason": piece.finish_reason, "prompt_tokens": piece.stats.prompt_tokens,
                        "generated_tokens": piece.stats.generated_tokens}
            if not piece.text and info is None:
                continue
            chunk = LCGenerationChunk(text=piece.text, generation_info=info)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def to_chat_messages(messages: list[BaseMessage]) -> list[dict]:
    """LangChain messages as chat-template messages (role, content)."""
    out = []
    for message in messages:
        role = message.role if isinstance(message, ChatMessage) else _ROLES.get(message.type)
        if role is None:
            raise ValueError(f"messages: a {message.type!r} message has no chat role")
        out.append({"role": role, "content": message.text})
    return out


class ChatBlockgen(_Settings, BaseChatModel):
    """A chat model over blockgen: messages go through the checkpoint's chat template; text streams as it is
    committed; the last chunk carries usage (prompt / generated tokens) and the finish reason."""

    streaming: bool = False

    @property
    def _llm_type(self) -> str:
        return "blockgen-chat"

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        name = kwargs.get("model") or self.model
        for piece in _stream_text(self, to_chat_messages(messages), True, stop, kwargs):
            if piece.text:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
                if run_manager:
                    run_manager.on_llm_new_token(piece.text, chunk=chunk)
                yield chunk
            if piece.finish_reason is not None:
                stats = piece.stats
                usage = {"input_tokens": int(stats.prompt_tokens), "output_tokens": int(stats.generated_tokens),
                         "total_tokens": int(stats.prompt_tokens + stats.generated_tokens)}
                yield ChatGenerationChunk(
                    message=AIMessageChunk(
                        content="", chunk_position="last", usage_metadata=usage,
                        response_metadata={"model_name": str(name), "finish_reason": piece.finish_reason,
                                           "model_provider": "blockgen"},
                    ),
                    generation_info={"finish_reason": piece.finish_reason},
                )

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        full: ChatGenerationChunk | None = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            full = chunk if full is None else full + chunk
        message = full.message
        result = AIMessage(content=message.content, usage_metadata=message.usage_metadata,
                           response_metadata=message.response_metadata, id=message.id)
        return ChatResult(generations=[ChatGeneration(message=result, generation_info=full.generation_info)])


class WriteDocument(BaseModel):
    """What the document-writer runnable (and tool) takes."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, description="the report's topic or the story's premise")
    kind: Literal["report", "story"] = "report"
    words: int = Field(1500, ge=1, le=200_000, description="length of the document in words")
    out: str | None = Field(None, description="output directory (default: under the runnable's out_root)")
    outline: str | None = Field(None, description="an outline file (JSON, YAML or Markdown)")
    resume: bool = False


def document_writer(model="default", *, out_root: str | Path = "blockgen-documents",
                    output: Literal["markdown", "document", "summary"] = "markdown", **writer_options):
    """A runnable that plans and writes a whole document.

    Input: a WriteDocument (or its dict). Output: the Markdown text, the Document, or a short summary (title, words,
    sections, files) for agents. Progress goes to callbacks as custom events named "blockgen_progress" (plan,
    paragraph, image, section, done; with words so far and the target). `model` is a name/path or a loaded blockgen
    model. `document_writer(...).as_tool(name=..., description=...)` turns it into an agent tool.
    """
    from blockgen.document.writer import WriterConfig

    WriterConfig.build(**writer_options)  # bad options fail here, not at the first call
    root = Path(out_root)

    def write(request: WriteDocument | dict, config: RunnableConfig):
        from blockgen.api import write_report, write_story
        from blockgen.runtime import LoadedModel

        request = request if isinstance(request, WriteDocument) else WriteDocument.model_validate(request)
        lm, lock = (model, _client_lock(model)) if isinstance(model, LoadedModel) else loaded_model(model)
        out = Path(request.out) if request.out else root / _slug(request.topic)

        def progress(event):
            dispatch_custom_event("blockgen_progress", {"kind": event.kind, "section": event.section,
                                                        "heading": event.heading, "words": event.words,
                                                        "target": event.target}, config=config)

        write_fn = write_report if request.kind == "report" else write_story
        with lock:
            doc = write_fn(request.topic, words=request.words, out=out, model=lm, outline=request.outline,
                           resume=request.resume, on_event=progress, **writer_options)
        if output == "document":
            return doc
        if output == "summary":
            return (f"Wrote {doc.request.kind} \"{doc.outline.title}\": {doc.words} words in "
                    f"{len(doc.outline.sections)} sections; Markdown at {out / 'document.md'}, HTML at "
                    f"{out / 'document.html'}.")
        return (out / "document.md").read_text(encoding="utf-8")

    return RunnableLambda(write, name="blockgen_document_writer").with_types(input_type=WriteDocument)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "document"
