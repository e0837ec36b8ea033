"""`mmrwkv serve`: one model behind an OpenAI-compatible HTTP API (`/v1/chat/completions`, `/v1/models`).

OpenAI clients send the whole conversation with every request. The RNN state after each answered request is kept
(a `ChatSession` per conversation, LRU-bounded) under a hash of the messages it has consumed, the answer included;
a request whose earlier messages hash to a kept session continues a fork of it, so turn N runs only its new tokens
(media are preprocessed and prefilled through one shared `PrefixCache`, as the demo does). A history the server has
not seen (another client, an edited reply) is prefilled whole. Forks keep conversations apart: two clients never
share a state.

Content parts: `text`, `image_url` (only `data:` URLs: the server reads no file and fetches nothing a client
names), `input_audio` (base64 `data` + `format`). Bounds: body bytes, messages, media items, `max_tokens`, requests
in flight (beyond: 429). Model calls run one at a time under a lock; streams interleave token by token.
Errors are OpenAI-shaped: `{"error": {"message", "type", "param", "code"}}` with a 4xx status.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from mmrwkv.errors import MMRWKVError

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how much the server keeps."""

    max_body_bytes: int = 20 * 2**20
    max_messages: int = 256
    max_media: int = 8
    max_tokens: int = 2048
    default_max_tokens: int = 256
    max_in_flight: int = 4
    max_conversations: int = 64
    cache_bytes: int = 256 * 2**20


class RequestError(Exception):
    """A request the server refuses: HTTP `status`, an OpenAI error `type`, the offending `param`."""

    def __init__(
        self, message: str, *, status: int = 400, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": None}}


@dataclass
class Message:
    """One parsed chat message: role, plain text, media bytes, and a digest of all of it."""

    role: str
    text: str
    images: list[bytes]
    audio: list[bytes]

    def digest(self) -> str:
        h = hashlib.sha256(f"{self.role}\0{self.text.strip()}\0".encode())
        for kind, items in (("image", self.images), ("audio", self.audio)):
            for item in items:
                h.update(f"{kind}\0{hashlib.sha256(item).hexdigest()}\0".encode())
        return h.hexdigest()


def conversation_key(messages: list[Message]) -> str:
    """The key of the state after `messages` (the root when empty)."""
    h = hashlib.sha256(b"conversation\0")
    for m in messages:
        h.update(m.digest().encode())
    return h.hexdigest()


def _decode_b64(data: Any, param: str) -> bytes:
    if not isinstance(data, str):
        raise RequestError(f"{param}: expected base64 text", param=param)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{param}: not valid base64", param=param) from None


def _image_bytes(part: dict, param: str) -> bytes:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise RequestError(f"{param}.image_url.url: expected a string", param=param)
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url else "a path"
        raise RequestError(
            f"{param}.image_url.url: only data: URLs are accepted (got {scheme}:...); this server reads no files "
            "and fetches nothing, send the image inline as data:image/png;base64,...",
            param=param,
        )
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise RequestError(f"{param}.image_url.url: expected data:<type>;base64,<data>", param=param)
    return _decode_b64(payload, f"{param}.image_url.url")


def _parse_content(content: Any, role: str, param: str) -> tuple[str, list[bytes], list[bytes]]:
    if content is None:
        return "", [], []
    if isinstance(content, str):
        return content, [], []
    if not isinstance(content, list):
        raise RequestError(f"{param}.content: expected a string or a list of parts", param=param)
    texts, images, audio = [], [], []
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(_image_bytes(part, where))
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            audio.append(_decode_b64(part["input_audio"].get("data"), f"{where}.input_audio.data"))
        else:
            raise RequestError(f"{where}: unsupported part {kind!r} (text, image_url, input_audio)", param=where)
    if (images or audio) and role != "user":
        raise RequestError(f"{param}: only user messages may carry images or audio", param=param)
    return "".join(texts), images, audio


def parse_messages(raw: Any, limits: ServeLimits) -> list[Message]:
    """The request's `messages`, checked: known roles, a user message last, bounded counts."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages: expected a non-empty list", param="messages")
    if len(raw) > limits.max_messages:
        raise RequestError(f"messages: {len(raw)} messages, at most {limits.max_messages}", param="messages")
    out = []
    for i, m in enumerate(raw):
        param = f"messages[{i}]"
        role = ROLES.get(m.get("role")) if isinstance(m, dict) else None
        if role is None:
            raise RequestError(f"{param}.role: expected one of {sorted(ROLES)}", param=param)
        out.append(Message(role, *_parse_content(m.get("content"), role, param)))
    if out[-1].role != "user":
        raise RequestError("messages: the last message must come from the user", param="messages")
    n_media = sum(len(m.images) + len(m.audio) for m in out)
    if n_media > limits.max_media:
        raise RequestError(f"messages: {n_media} media items, at most {limits.max_media}", param="messages")
    return out


def sampling_from(body: dict, limits: ServeLimits):
    """The request's sampling settings as a `SamplingConfig` (the turn always ends at a blank line)."""
    from mmrwkv.inference.generate import SamplingConfig

    if body.get("n", 1) != 1:
        raise RequestError("n: only n=1 is supported", param="n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or limits.default_max_tokens
    if not isinstance(max_tokens, int) or not 0 < max_tokens <= limits.max_tokens:
        raise RequestError(f"max_tokens: expected 1..{limits.max_tokens}, got {max_tokens!r}", param="max_tokens")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise RequestError("stop: expected a string or up to 4 strings", param="stop")
    values = {}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise RequestError(f"{name}: expected a number, got {value!r}", param=name)
            values[name] = float(value)
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise RequestError(f"seed: expected an integer, got {seed!r}", param="seed")
    try:
        return SamplingConfig(max_tokens=max_tokens, stop=[*stop, "\n\n"], seed=seed, **values)
    except (MMRWKVError, ValueError) as err:
        raise RequestError(str(err)) from None


class ChatServer:
    """The model, its conversations and the model lock; framework-free (the HTTP app calls into it)."""

    def __init__(self, model: Any, name: str, limits: ServeLimits | None = None):
        from mmrwkv.inference.prefix_cache import PrefixCache

        self.model = model
        self.name = name
        self.limits = limits or ServeLimits()
        self.cache = PrefixCache(max_bytes=self.limits.cache_bytes)
        self.lock = threading.Lock()
        self.sessions: OrderedDict[str, Any] = OrderedDict()
        self.in_flight = 0
        self._count = threading.Lock()
        self.reused = 0

    def admit(self) -> None:
        """Count a request in, or refuse it with 429 when `max_in_flight` are running."""
        with self._count:
            if self.in_flight >= self.limits.max_in_flight:
                raise RequestError(
                    f"the server is busy ({self.in_flight} requests in flight); retry later",
                    status=429,
                    kind="rate_limit_error",
                )
            self.in_flight += 1

    def release(self) -> None:
        with self._count:
            self.in_flight -= 1

    def start(self, messages: list[Message], sampling) -> tuple[Any, Iterator[str]]:
        """(session, answer stream) for a request: a fork of the kept session of its history, or a fresh one
        with the history prefilled; the new user turn is prefilled here (bad media raise here)."""
        from mmrwkv.data.template import Turn
        from mmrwkv.inference.session import ChatSession

        with self.lock:
            kept = self.sessions.get(conversation_key(messages[:-1]))
            if kept is not None:
                self.sessions.move_to_end(conversation_key(messages[:-1]))
                session = kept.fork()
                self.reused += 1
            else:
                session = ChatSession(self.model, cache=self.cache)
                session.add_turns([Turn(m.role, m.text, list(m.images), list(m.audio)) for m in messages[:-1]])
            last = messages[-1]
            stream = session.ask(last.text, last.images, last.audio, sampling=sampling)
        return session, self._locked(stream)

    def _locked(self, stream: Iterator[str]) -> Iterator[str]:
        """The answer stream with every model step under the lock."""
        while True:
            with self.lock:
                try:
                    piece = next(stream)
                except StopIteration:
                    return
            yield piece

    def keep(self, messages: list[Message], session: Any) -> None:
        """Keep a finished session under the key of its messages plus its answer."""
        result = session.last_result
        answer = Message("assistant", result.text if result is not None else "", [], [])
        with self.lock:
            key = conversation_key([*messages, answer])
            self.sessions[key] = session
            self.sessions.move_to_end(key)
            while len(self.sessions) > self.limits.max_conversations:
                self.sessions.popitem(last=False)


def completion_body(server: ChatServer, cid: str, created: int, session: Any, text: str) -> dict:
    """The non-streamed `chat.completion` object."""
    result = session.last_result
    completion = len(result.tokens) if result is not None else 0
    prompt = max(len(session.history.ids) - completion, 0)
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": server.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": _finish(session)}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def _finish(session: Any) -> str:
    result = session.last_result
    return "length" if result is not None and result.finish_reason == "length" else "stop"


def chunk(server: ChatServer, cid: str, created: int, delta: dict, finish: str | None = None) -> str:
    """One server-sent event of a streamed `chat.completion.chunk`."""
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": server.name,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


def new_ids() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


def with_defaults(limits: ServeLimits, **changes) -> ServeLimits:
    return replace(limits, **{k: v for k, v in changes.items() if v is not None})
