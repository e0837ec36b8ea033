"""`mmrwkv bench demo`: time to first token and streaming tokens/s of the chat demo, new image vs cached image.

The model is the default checkpoint (the newest `final` with an image encoder under runs/, what `make run` leaves;
an audio-only run trained later is passed over) or, when there is none, a random model of the default recipe's
shape (its BPE tokenizer trained on a few lines in a temp dir).
Each repeat, in a new session: a message with a NEW image (a fresh PNG); then, after a reset, the same image and
question again (the session's cache holds the whole prompt's state); then, after a reset, the same image with
another question (the cache holds the state up to the image). Answers are exactly `--answer-tokens` greedy tokens
(no stop strings, no end token), so the cases differ only in what comes before the first token.

Two paths are timed: the demo's handler (`ChatDemo.respond`: upload check, image hash/decode, prefill, decode
steps, chat messages) and, unless `--no-server`, the launched page through gradio_client (adds the file upload,
HTTP and the queue; the client runs in a child process, as a browser does). Time to first token = from sending
until the first update that shows reply text. Through the server it is also given up to the moment the server sends
that update ("server sent": gradio_client polls its message queue every 50 ms, so what it shows lags what a
browser gets), and from the server receiving the message (the queue join, after the upload) to that send ("in
server": what the server adds around the handler). The client is built with `ssl_verify=False`: the URL is plain
http on 127.0.0.1, where that only skips loading the CA bundle, which httpx does for every upload and every message.
Tokens/s counts the tokens after the first from the first update with reply text to the last one; through the
server from the server's own sends (the client may receive a whole answer in one poll); "n/a" when one update
carried the whole answer.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

QUESTION = "What shape is in the image?"
OTHER_QUESTION = "What color is the shape?"
# (case, question): each repeat runs the three in this order, resetting the chat before each
CASES = (("new", QUESTION), ("cached", QUESTION), ("cached+q", OTHER_QUESTION))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model choice, answer length, repeats (defaults finish in about a minute on 2 CPU cores)."""
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="multimodal checkpoint (default: the newest with an image encoder under --runs-dir)",
    )
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--recipe", default="recipes/easy_vqa.yaml", help="shape of the random model without one")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override for the random model, e.g. encoders.image.grid=8 (repeatable)",
    )
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="new-image / cached-image pairs (median)")
    parser.add_argument("--image-side", type=int, default=256, help="side of the uploaded PNG in pixels")
    parser.add_argument("--no-server", action="store_true", help="time the handler only, no Gradio server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for this run (1 keeps CPU times honest on a busy machine)",
    )


def default_model(args: argparse.Namespace, workdir: Path):
    """(model, description): the checkpoint, the newest with an image encoder under runs/, or a random model of the
    recipe's shape."""
    from mmrwkv.multimodal import MultimodalRWKV

    path = args.checkpoint or next(iter(image_checkpoints(args.runs_dir)), None)
    if path:
        return MultimodalRWKV.load(path).eval(), path
    model = random_recipe_model(args.recipe, workdir, seed=args.seed, overrides=args.override)
    return model, f"random model shaped like {args.recipe} {' '.join(args.override)}".strip()


def image_checkpoints(runs_dir: str) -> list[str]:
    """`find_checkpoints(runs_dir)` (final models first, newest first) that have an image encoder: the bench sends
    images."""
    import json

    from mmrwkv.demos.common import find_checkpoints
    from mmrwkv.multimodal import CONFIG_FILE

    found = []
    for path in find_checkpoints(runs_dir):
        try:
            encoders = json.loads((Path(path) / CONFIG_FILE).read_text()).get("encoders") or {}
        except (OSError, ValueError):
            continue
        if "image" in encoders:
            found.append(path)
    return found


def random_recipe_model(recipe: str, workdir: Path, *, seed: int = 0, overrides: list[str] | None = None):
    """A random model built as the recipe builds it; a "bpe" tokenizer is trained on template lines."""
    import torch

    from mmrwkv.config import load_config
    from mmrwkv.data.template import ROLES
    from mmrwkv.multimodal import MultimodalRWKV
    from mmrwkv.tokenizer import load_tokenizer, train_bpe
    from mmrwkv.training.build import model_config

    cfg = load_config(recipe, overrides or [])
    spec = cfg.model.tokenizer
    if spec == "bpe":
        spec = str(workdir / "tokenizer.json")
        lines = [f"{role}: {QUESTION} a red circle, a blue square" for role in ROLES.values()] * 50
        train_bpe(lines, cfg.model.bpe_vocab_size, spec)
    torch.manual_seed(seed)
    return MultimodalRWKV.from_config(model_config(cfg, spec, load_tokenizer(spec).vocab_size)).eval()


def write_png(path: Path, seed: int, side: int) -> str:
    """A random RGB PNG (a "new image" nobody has sent before)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def make_demo(model, answer_tokens: int):
    """A ChatDemo over `model` whose answers are exactly `answer_tokens` greedy tokens."""
    from mmrwkv.demos.chat import ChatDemo, ChatOptions
    from mmrwkv.demos.common import ModelRegistry
    from mmrwkv.inference.generate import SamplingConfig

    class FixedLength(ChatDemo):
        # wall seconds from entering `respond` to its first update with reply text, per call (server runs), and the
        # perf_counter time of that update
        first_reply_s: list[float] = []
        first_reply_at: list[float] = []

        def sampling(self, temperature, top_p, max_tokens):
            return SamplingConfig(temperature=0, max_tokens=answer_tokens, stop=[], eos_ids=[])

        def respond(self, *args, **kwargs):
            start, seen = time.perf_counter(), False
            for update in super().respond(*args, **kwargs):
                if not seen and _reply(update):
                    seen = True
                    self.first_reply_at.append(time.perf_counter())
                    self.first_reply_s.append(self.first_reply_at[-1] - start)
                yield update

    registry = ModelRegistry()
    registry.add("bench", model)
    return FixedLength(ChatOptions(checkpoint="bench", concurrency=1), registry=registry)


def _timed(updates, reply_of, uploads: list | None = None) -> tuple[float, float, float, float]:
    """(seconds to the first update showing reply text, seconds from it to the last update, seconds spent
    uploading files before the first update (the end of the last upload minus the start, 0 without uploads),
    this process's CPU seconds to the first update)."""
    start, cpu = time.perf_counter(), time.process_time()
    first = first_cpu = None
    for update in updates:
        if first is None and reply_of(update):
            first, first_cpu = time.perf_counter(), time.process_time()
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the demo streamed no reply text")
    upload = max((done - start for _, done in uploads or []), default=0.0)
    return first - start, end - first, upload, first_cpu - cpu


def _reply(messages) -> str:
    last = messages[-1] if isinstance(messages, list) and messages else {}
    content = last.get("content") if last.get("role") == "assistant" else ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) and not content.startswith("⚠️") else ""


def measure_handler(demo, images: list[str], repeats: int) -> dict:
    """Per case of CASES: per repeat `_timed`'s tuple through `ChatDemo.respond`, one session per repeat."""
    runs: dict[str, list] = {name: [] for name, _ in CASES}
    for r in range(repeats):
        sid = f"bench-handler-{r}"
        for name, question in CASES:
            demo.reset(sid)
            message = {"text": question, "files": [images[r]]}
            runs[name].append(_timed(demo.respond(message, "bench", "", 0.0, 1.0, 1, sid), _reply))
    return runs


def measure_server(demo, images: list[str], repeats: int) -> dict:
    """The same cases through a launched page and gradio_client (one client = one session per repeat), `demo` from
    `make_demo`. Per run: (ttft, stream seconds, upload seconds, the handler's own wall ttft inside the server, seconds
    from sending to the server sending the first update with reply text, seconds from the server receiving the
    message to that send, seconds from that send to the server's last send)."""
    from mmrwkv.demos.chat import build_chat_app
    from mmrwkv.demos.common import free_port, launch_app

    app = build_chat_app(demo.options, demo)
    port = free_port()
    launch_app(app, port=port, block=False)
    runs: dict[str, list] = {name: [] for name, _ in CASES}
    client = ClientProcess(f"http://127.0.0.1:{port}/")
    try:
        with _recording_server() as server:
            for r in range(repeats):
                client.ask(op="connect")
                for name, question in CASES:
                    client.ask(op="reset")
                    server.clear()
                    demo.first_reply_s.clear()
                    demo.first_reply_at.clear()
                    got = client.ask(op="send", question=question, image=images[r])
                    ttft, stream, upload = got["ttft"], got["stream"], got["upload"]
                    runs[name].append((ttft, stream, upload, *_server_times(demo, server, got["start"])))
                client.ask(op="close")
    finally:
        client.close()
        app.close()
    return runs


class ClientProcess:
    """gradio_client in a child process, as a browser is: its threads (HTTP, message polling) do not compete with
    the server for this process's interpreter lock. Commands and answers are JSON lines; times are perf_counter
    values, one monotonic clock for every process on Linux."""

    MARK = "mmrwkv-bench-client "

    def __init__(self, url: str):
        import subprocess
        import sys

        code = "from mmrwkv.bench.demo import client_loop; client_loop()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.ask(op="url", url=url)

    def ask(self, **command) -> dict:
        """Send one command; its answer (raises when the child failed or exited)."""
        import json

        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(self.MARK):
                answer = json.loads(line[len(self.MARK) :])
                if "error" in answer:
                    raise RuntimeError(f"bench client, {command.get('op')}: {answer['error']}")
                return answer
        raise RuntimeError(f"bench client exited with code {self.proc.wait()} during {command.get('op')!r}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def client_loop() -> None:
    """The child side of ClientProcess: read commands from stdin, answer on stdout. "send" posts a message with an
    image to /chat and answers {start, ttft, stream, upload} (seconds; start as perf_counter)."""
    import json
    import sys

    from gradio_client import Client, handle_file

    url, client = "", None
    with _recording_uploads() as uploads:
        for line in sys.stdin:
            command = json.loads(line)
            op, answer = command["op"], {}
            try:
                if op == "url":
                    url = command["url"]
                elif op == "connect":
                    # plain http on 127.0.0.1: no certificate is checked, so skip loading the CA bundle, which httpx
                    # does for every request
                    client = Client(url, verbose=False, download_files=False, ssl_verify=False)
                elif op == "reset":
                    client.predict(api_name="/reset")
                elif op == "send":
                    uploads.clear()
                    message = {"text": command["question"], "files": [handle_file(command["image"])]}
                    start = time.perf_counter()
                    job = client.submit(message, "bench", "", 0.0, 1.0, 1, api_name="/chat")
                    ttft, stream, upload, _ = _timed(job, _reply, uploads)
                    answer = {"start": start, "ttft": ttft, "stream": stream, "upload": upload}
                elif op == "close":
                    client.close()
            except Exception as err:  # reported to the parent, which raises it
                answer = {"error": f"{type(err).__name__}: {err}"}
            print(ClientProcess.MARK + json.dumps(answer), flush=True)


def _server_times(demo, server: ServerLog, start: float) -> tuple[float, float, float, float]:
    """(handler ttft, sent - start, sent - joined, last send - sent) of one message; `sent` is the server's first
    streamed update after the handler's first reply (it carries that reply)."""
    sent = [
        t for kind, t in server.sends if kind == "generating" and demo.first_reply_at and t >= demo.first_reply_at[0]
    ]
    if len(server.joins) != 1 or len(demo.first_reply_s) != 1 or not sent:
        raise RuntimeError("cannot separate the upload and the handler from the server's time")
    return demo.first_reply_s[0], sent[0] - start, sent[0] - server.joins[0], server.sends[-1][1] - sent[0]


class ServerLog:
    """perf_counter times at which the server took a message into its queue (`joins`) and queued updates for its
    client (`sends`: (kind, time), kind "generating" for a streamed update, "completed" for the last)."""

    def __init__(self):
        self.joins: list[float] = []
        self.sends: list[tuple[str, float]] = []

    def clear(self) -> None:
        self.joins.clear()
        self.sends.clear()


@contextlib.contextmanager
def _recording_server():
    """A ServerLog of the gradio queue while the block runs."""
    from gradio.queueing import Queue

    log = ServerLog()
    send, push = Queue.send_message, Queue.push

    def timed_send(self, event, message):
        kind = str(getattr(message, "msg", "")).rsplit("_", 1)[-1]
        if kind in ("generating", "completed"):
            log.sends.append((kind, time.perf_counter()))
        return send(self, event, message)

    async def timed_push(self, *args, **kwargs):
        log.joins.append(time.perf_counter())
        return await push(self, *args, **kwargs)

    Queue.send_message, Queue.push = timed_send, timed_push
    try:
        yield log
    finally:
        Queue.send_message, Queue.push = send, push


@contextlib.contextmanager
def _recording_uploads():
    """Record (start, end) perf_counter times of gradio_client's file uploads while the block runs."""
    from gradio_client.client import Endpoint

    uploads: list[tuple[float, float]] = []
    original = Endpoint._upload_file

    def timed(self, f, data_index):
        start = time.perf_counter()
        try:
            return original(self, f, data_index)
        finally:
            uploads.append((start, time.perf_counter()))

    Endpoint._upload_file = timed
    try:
        yield uploads
    finally:
        Endpoint._upload_file = original


def _summary(runs: list[tuple], answer_tokens: int) -> dict:
    """(median, best) of ttft and of the inner ttft (handler: CPU time; server: the handler's wall time inside the
    server); through the server also of the time to the server sending the first token and of the server's own time
    before it; median upload and tokens/s after the first token (None when no run streamed over time). The best of
    the repeats is the steadiest figure on a shared, busy machine; the median is also shown.
    """

    def both(values: list[float]) -> tuple[float, float]:
        return statistics.median(values), min(values)

    server = len(runs[0]) > 4
    # through the server the stream is timed by the server's sends: the client may get a whole answer in one poll
    rates = [tokens_per_s(answer_tokens, r[6] if server else r[1]) for r in runs]
    rates = [rate for rate in rates if rate is not None]
    out = {
        "ttft": both([r[0] for r in runs]),
        "inner": both([r[3] for r in runs]),
        "upload": statistics.median(r[2] for r in runs),
        "rate": statistics.median(rates) if rates else None,
    }
    if server:
        out |= {"sent": both([r[4] for r in runs]), "in_server": both([r[5] for r in runs])}
    return out


def tokens_per_s(answer_tokens: int, stream_s: float) -> float | None:
    """Tokens after the first per second of `stream_s` (from the first update with reply text to the last); None
    when the answer had no later tokens or arrived in one update (no time between first and last: the rate of such
    a run is the polling's, not the stream's)."""
    if answer_tokens < 2 or stream_s <= 1e-4:
        return None
    return (answer_tokens - 1) / stream_s


def run(args: argparse.Namespace) -> int:
    """Print time to first token and tokens/s, new vs cached image, for the handler and the server."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mmrwkv-bench-demo-") as tmp:
        workdir = Path(tmp)
        model, label = default_model(args, workdir)
        images = [write_png(workdir / f"new{i}.png", args.seed + i, args.image_side) for i in range(args.repeats + 1)]
        demo = make_demo(model, args.answer_tokens)
        # one untimed turn so lazy initialisation is not charged to the first repeat
        measure_handler(demo, images[-1:], 1)
        results = {"handler": measure_handler(demo, images, args.repeats)}
        if not args.no_server:
            results["server"] = measure_server(demo, images, args.repeats)
    print(
        f"demo bench: {label}; {args.image_side}px PNG uploads, {args.answer_tokens}-token greedy answers, "
        f"median of {args.repeats}, {torch.get_num_threads()} threads"
    )
    print(
        "cases: new = a new image; cached = the same image and question again; cached+q = the same image, "
        "another question"
    )
    for path, runs in results.items():
        _print_path(path, {name: _summary(r, args.answer_tokens) for name, r in runs.items()})
    return 0


def _print_path(path: str, s: dict) -> None:
    # handler: wall and this thread's CPU time; server: wall, the server's send, its own part, the handler inside it
    server = path == "server"
    columns = [("ttft", "first token ms")] + (
        [("sent", "server sent ms"), ("in_server", "in server ms"), ("inner", "in handler ms")]
        if server
        else [("inner", "first token cpu ms")]
    )
    head = "".join(f" {label + ' (median)':>26} {'(best)':>8}" for _, label in columns)
    print(f"{'path':<8} {'image':<9}{head} {'tokens/s':>9}" + (f" {'upload ms':>10}" if server else ""))
    for name, r in s.items():
        cells = "".join(f" {r[key][0] * 1e3:>26.1f} {r[key][1] * 1e3:>8.1f}" for key, _ in columns)
        rate = "n/a" if r["rate"] is None else f"{r['rate']:.1f}"
        print(f"{path:<8} {name:<9}{cells} {rate:>9}" + (f" {r['upload'] * 1e3:>10.1f}" if server else ""))
    for name in ("cached", "cached+q"):
        line = "; ".join(f"{label[:-3]}: {_ratios(s[name][key], s['new'][key])}" for key, label in columns)
        print(f"{path:<8} {name} / new: {line} (target <= 0.3)")


def _ratios(hit: tuple[float, float], new: tuple[float, float]) -> str:
    return f"median {hit[0] / new[0]:.2f}x, best {hit[1] / new[1]:.2f}x"
