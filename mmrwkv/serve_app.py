"""The HTTP side of `mmrwkv serve` (FastAPI + uvicorn): routes, body bounds, SSE streaming, OpenAI-shaped errors.

The request logic lives in `mmrwkv.serve` (`ChatServer`); this module reads bodies (refused past
`max_body_bytes` before they are read whole), admits requests (429 past `max_in_flight`) and turns the answer
stream into one JSON object or server-sent events ending with `data: [DONE]`. (No `from __future__ import
annotations` here: FastAPI reads the route signatures' annotations at run time.)
"""

import json
import threading
from typing import Any

from mmrwkv.errors import MMRWKVError
from mmrwkv.serve import (
    ChatServer,
    RequestError,
    chunk,
    completion_body,
    new_ids,
    parse_messages,
    sampling_from,
)


def _error(err: RequestError):
    from fastapi.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status)


async def read_json(request, limit: int) -> dict:
    """The request's JSON object, refusing a body over `limit` bytes (by its header, else while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes", status=413)
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > limit:
            raise RequestError(f"request body exceeds the limit of {limit} bytes", status=413)
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"request body is not JSON ({err})") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def create_app(server: ChatServer):
    """The FastAPI app serving `server`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="mmrwkv serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": 0, "owned_by": "mmrwkv"}]}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "in_flight": server.in_flight}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            server.admit()
        except RequestError as err:
            return _error(err)
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                server.release()

        try:
            body = await read_json(request, server.limits.max_body_bytes)
            messages = parse_messages(body.get("messages"), server.limits)
            sampling = sampling_from(body, server.limits)
            session, stream = await run_in_threadpool(server.start, messages, sampling)
        except RequestError as err:
            release()
            return _error(err)
        except MMRWKVError as err:
            release()
            return _error(RequestError(str(err)))
        except BaseException:
            release()
            raise
        if body.get("stream"):
            events = _events(server, messages, session, stream, release)
            return StreamingResponse(_released(events, release), media_type="text/event-stream")
        try:
            text = await run_in_threadpool(lambda: "".join(stream))
            server.keep(messages, session)
            return JSONResponse(completion_body(server, *new_ids(), session, text))
        finally:
            release()

    return app


async def _released(events, release):
    """The events, pulled in the thread pool; the request's slot is freed however the stream ends (a client gone
    mid-stream cancels this generator, while the blocking one it pulls from stays suspended)."""
    from starlette.concurrency import iterate_in_threadpool

    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        release()


def _events(server: ChatServer, messages: list, session: Any, stream, release):
    """SSE events of one streamed answer; the session is kept only when the answer ran to its end."""
    cid, created = new_ids()
    finished = False
    try:
        yield chunk(server, cid, created, {"role": "assistant", "content": ""})
        for piece in stream:
            yield chunk(server, cid, created, {"content": piece})
        finished = True
        result = session.last_result
        finish = "length" if result is not None and result.finish_reason == "length" else "stop"
        yield chunk(server, cid, created, {}, finish)
        yield "data: [DONE]\n\n"
    finally:
        stream.close()
        if finished:
            server.keep(messages, session)
        release()


def run_server(server: ChatServer, host: str, port: int) -> None:
    """Serve until interrupted (uvicorn, one process, one model)."""
    import uvicorn

    uvicorn.run(create_app(server), host=host, port=port, log_level="info")
