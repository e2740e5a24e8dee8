"""The request bodies the server accepts, validated at the boundary: OpenAI's completion and chat fields, blockgen's
decoding options as extra body fields, and the document-job request.

Defaults are blockgen's, not OpenAI's: without `temperature` a request decodes greedily (OpenAI samples at 1.0; a
small local model mostly rambles there). Fields that OpenAI clients send by default and that change nothing here
(user, metadata, store, ...) are accepted and ignored; fields that ask for something the server does not do (tool
calls, log probabilities, penalties other than blockgen's repetition penalty) are refused with a 400 naming them,
rather than silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blockgen.errors import InvalidArgumentError

# blockgen's decoding options a request may add as extra body fields (GenerationConfig validates their values)
EXTRA_OPTIONS = ("block_size", "steps", "scheduler", "threshold", "factor", "editing_threshold", "top_k",
                 "repetition_penalty", "penalty_scope", "dry_multiplier", "dry_base", "dry_allowed_length",
                 "dry_breakers", "cache")
# GenerationConfig's names -> the API's, for errors that name a field
API_NAMES = {"max_new_tokens": "max_tokens"}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    """The fields completions and chat share."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None

    def _refuse(self, name: str, reason: str) -> None:
        raise InvalidArgumentError(name, getattr(self, name, None), reason)

    def refuse_unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                self._refuse(name, "is not supported; blockgen's `repetition_penalty` and `dry_multiplier` (extra "
                                    "body fields) are")
        if self.logit_bias:
            self._refuse("logit_bias", "is not supported")
        for name in self.model_extra or {}:  # other servers' DRY fields (dry_sequence_breakers, dry_penalty_last_n)
            if name.startswith("dry_") and name not in EXTRA_OPTIONS:
                self._refuse(name, "is not supported; blockgen's DRY fields are dry_multiplier, dry_base, "
                                   "dry_allowed_length, dry_breakers")
        if not self.stream and self.stream_options is not None and self.stream_options.include_usage:
            self._refuse("stream_options", "is only allowed with stream=true")

    @property
    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 16:
            raise InvalidArgumentError("stop", stops, "at most 16 stop strings")
        if any(not s for s in stops):
            raise InvalidArgumentError("stop", stops, "a stop string is empty")
        return tuple(dict.fromkeys(stops))

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def generation_options(self, max_tokens: int) -> dict:
        """GenerationConfig's keyword options for this request (the length resolved by the caller)."""
        options: dict[str, Any] = {"max_new_tokens": max_tokens, "stop": self.stops}
        for name in ("temperature", "top_p", "seed"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        if options.get("top_p") == 1.0:
            del options["top_p"]  # OpenAI's "no nucleus cut"
        extras = self.model_extra or {}
        options.update({name: extras[name] for name in EXTRA_OPTIONS if extras.get(name) is not None})
        return options


class CompletionRequest(_Sampling):
    """POST /v1/completions: the prompt is continued as raw text (no chat template)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.echo:
            self._refuse("echo", "is not supported")
        if self.suffix:
            self._refuse("suffix", "is not supported")
        if self.logprobs:
            self._refuse("logprobs", "log probabilities are not returned")
        if self.best_of not in (None, self.n):
            self._refuse("best_of", "is not supported (only best_of = n)")

    def prompts(self) -> list[str | list[int]]:
        """The prompts of the request: one string or token-id list each."""
        p = self.prompt
        if isinstance(p, str) or (p and all(isinstance(t, int) for t in p)):
            return [p]
        if not p:
            raise InvalidArgumentError("prompt", p, "is empty")
        return list(p)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


_TEMPLATE_ROLES = {"developer": "system", "function": "tool"}


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions: the messages go through the checkpoint's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list | None = None
    functions: list | None = None
    response_format: dict | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.logprobs or self.top_logprobs:
            self._refuse("logprobs" if self.logprobs else "top_logprobs", "log probabilities are not returned")
        for name in ("tools", "functions"):
            if getattr(self, name):
                self._refuse(name, "tool calling is not offered by this server")
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            self._refuse("response_format", "only the 'text' format is offered")

    @property
    def length(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def template_messages(self) -> list[dict]:
        """The messages as the chat template takes them: text content only, OpenAI's roles mapped."""
        out = []
        for i, message in enumerate(self.messages):
            content = message.content
            if isinstance(content, list):
                for j, part in enumerate(content):
                    if part.type != "text" or part.text is None:
                        raise InvalidArgumentError(f"messages[{i}].content[{j}]", part.type, "only text parts are "
                                                   "supported")
                content = "".join(part.text for part in content)
            out.append({"role": _TEMPLATE_ROLES.get(message.role, message.role), "content": content or ""})
        return out


class DocumentRequest(BaseModel):
    """POST /v1/documents: a report or story written as a job (WriterConfig's fields go in `options`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["report", "story"] = "report"
    prompt: str = Field(min_length=1, description="the report's topic or the story's premise")
    words: int = Field(1500, ge=1, le=200_000)
    images: int | None = Field(None, ge=0, le=50, description="images to draw (needs the server's --image-model)")
    outline: str | dict | None = Field(None, description="an outline: Markdown heading list, or JSON / YAML text, "
                                       "or a JSON object")
    seed: int = 0
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="the writer's options (WriterConfig)")
