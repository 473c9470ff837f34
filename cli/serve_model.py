"""`crawl2chat serve-model`: the trained models of a work dir behind an OpenAI-compatible API,
and a small web chat page at `/`.

    GET  /                       the chat page (cli/web/chat.html)
    GET  /v1/models              base, sft, rlhf: those models.json lists
    POST /v1/chat/completions    OpenAI's chat completions, whole or streamed as server-sent events

What differs from OpenAI, on purpose:
- No system role: the chat format has none, so a system (or developer, or tool) message is a 400
  rather than text the model was never trained to read.
- A reply's `content` is the reply as a person reads it (calculator calls inline, as
  `[calc 12*13][= 156]`); `crawl2chat_parts` carries the same reply as message parts
  ({"type": "text"|"python"|"output", "text": ...}): on the message, or in the final chunk of a
  stream. Send them back on the assistant message and the model sees its tool calls as tool tokens
  again; an assistant message without them is read as plain text.
- `top_k` may be given; `top_p` and the other sampling knobs OpenAI has are accepted and ignored.
- Without `seed`, each request draws one.

The model is not thread-safe: one lock is held for the whole of each generation (and model load),
so requests are answered one at a time, in a worker thread, while the event loop stays free.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import threading
import time
import uuid
from importlib import resources
from typing import AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from cli.chat import ChatModel, ContextFull, ModelNotFound, Reply, Sampling, load_chat_model, model_index, model_names
from flows.config import PipelineConfig
from models.chat import visible_piece

DEFAULT_MAX_TOKENS = 256


# --- Requests -----------------------------------------------------------------------------------


class Part(BaseModel):
    type: Literal["text", "python", "output"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict] | None = None
    crawl2chat_parts: list[Part] | None = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # top_p, penalties, user, ...: accepted, ignored
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_k: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: dict | None = None

    def sampling(self) -> Sampling:
        return Sampling(temperature=1.0 if self.temperature is None else self.temperature, top_k=self.top_k,
                        max_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
                        seed=secrets.randbits(63) if self.seed is None else self.seed)


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def parse_request(body: object) -> CompletionRequest:
    try:
        request = CompletionRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}", param=where or None) from None
    if request.n not in (None, 1):
        raise ApiError(400, f"n={request.n}: crawl2chat answers one choice per request (n=1)", param="n")
    return request


def chat_messages(messages: list[Message]) -> list[dict]:
    """OpenAI messages as the chat format's: user text, and assistant parts (crawl2chat_parts
    when the client kept them, the content as plain text otherwise)."""
    out = []
    for i, message in enumerate(messages):
        if message.role not in ("user", "assistant"):
            raise ApiError(400, f"messages.{i}.role: {message.role!r} is not supported: the chat format knows user "
                                "and assistant turns only (put instructions in the first user message)",
                           param=f"messages.{i}.role", code="unsupported_role")
        if message.role == "assistant" and message.crawl2chat_parts is not None:
            out.append({"role": "assistant", "content": [p.model_dump() for p in message.crawl2chat_parts]})
        else:
            out.append({"role": message.role, "content": plain_text(message.content, f"messages.{i}.content")})
    if out[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's: it is what the model answers", param="messages")
    return out


def plain_text(content: str | list[dict] | None, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(400, f"{where}: only text parts are supported, got {part.get('type')!r}", param=where)
        texts.append(part["text"])
    return "\n".join(texts)


# --- Models and generation ------------------------------------------------------------------------


class ModelHost:
    """The models of one work dir, each loaded on first use, and the lock all model work takes."""

    def __init__(self, work_dir: str, device: str):
        self.index = model_index(work_dir)
        self.device = device
        self.lock = threading.Lock()
        self.loaded: dict[str, ChatModel] = {}

    def names(self) -> list[str]:
        return model_names(self.index)

    def get(self, name: str) -> ChatModel:
        """Blocking: call from a worker thread."""
        if name not in self.names():  # never a path: an HTTP client does not pick files to load
            raise ApiError(404, f"The model {name!r} does not exist: this server has {', '.join(self.names())}",
                           param="model", code="model_not_found")
        with self.lock:
            if name not in self.loaded:
                self.loaded[name] = load_chat_model(self.index, name, self.device, allow_paths=False)
            return self.loaded[name]


_END = object()


async def pieces_of(reply: Reply, lock: threading.Lock) -> AsyncIterator:
    """Run the reply's generation in a worker thread, holding the lock throughout, and hand its
    pieces to the event loop as they come. A client that goes away stops the generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    abandoned = threading.Event()

    def hand_over(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is shutting down
            abandoned.set()

    def generate() -> None:
        try:
            with lock:
                for piece in reply:
                    if abandoned.is_set():
                        return
                    hand_over(piece)
        except Exception as err:  # noqa: BLE001 - re-raised on the loop's side
            hand_over(err)
        finally:
            hand_over(_END)

    loop.run_in_executor(None, generate)
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        abandoned.set()


# --- Responses ------------------------------------------------------------------------------------


def usage(reply: Reply) -> dict:
    return {"prompt_tokens": len(reply.prompt), "completion_tokens": len(reply.tokens),
            "total_tokens": len(reply.prompt) + len(reply.tokens)}


async def complete(reply: Reply, lock: threading.Lock, model: str) -> dict:
    content = "".join([visible_piece(p) async for p in pieces_of(reply, lock)])
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "usage": usage(reply),
            "choices": [{"index": 0, "finish_reason": reply.finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": content, "crawl2chat_parts": reply.parts}}]}


async def completion_events(reply: Reply, lock: threading.Lock, model: str, with_usage: bool) -> AsyncIterator[str]:
    """OpenAI's chunk stream: the role, the content as it is written, then the finish reason with
    the whole reply's crawl2chat_parts, (usage when asked for,) and `data: [DONE]`."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}

    def event(delta: dict, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

    yield event({"role": "assistant", "content": ""})
    async for piece in pieces_of(reply, lock):
        if text := visible_piece(piece):
            yield event({"content": text})
    yield event({"crawl2chat_parts": reply.parts}, reply.finish_reason)
    if with_usage:
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage(reply)})}\n\n"
    yield "data: [DONE]\n\n"


def create_app(host: ModelHost) -> FastAPI:
    app = FastAPI(title="crawl2chat", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)  # unknown paths and methods, in the same shape
    async def http_error(_request, err: HTTPException):
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.exception_handler(Exception)  # a bug: still OpenAI's shape for the client; uvicorn logs the traceback
    async def server_error(_request, err: Exception):
        return JSONResponse(ApiError(500, f"{type(err).__name__}: {err}").body(), status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("cli").joinpath("web/chat.html").read_text()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "crawl2chat"}
                                           for name in host.names()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(http: Request):
        try:
            body = await http.json()
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None
        request = parse_request(body)
        messages = chat_messages(request.messages)
        loaded = await run_in_threadpool(host.get, request.model)
        try:
            reply = Reply(loaded, messages, request.sampling())
        except ContextFull as err:
            raise ApiError(400, str(err), param="messages", code="context_length_exceeded") from None
        if not request.stream:
            return await complete(reply, host.lock, request.model)
        with_usage = bool((request.stream_options or {}).get("include_usage"))
        return StreamingResponse(completion_events(reply, host.lock, request.model, with_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def serve_models(config: PipelineConfig, host: str, port: int, device: str) -> int:
    import uvicorn

    try:
        models = ModelHost(config.work_dir, device)
    except ModelNotFound as err:
        sys.exit(f"crawl2chat: {err}")
    print(f"crawl2chat: serving {', '.join(models.names())} from {config.work_dir}: chat at http://{host}:{port}/, "
          f"OpenAI API at http://{host}:{port}/v1", flush=True)
    uvicorn.run(create_app(models), host=host, port=port, log_level="warning")
    return 0
