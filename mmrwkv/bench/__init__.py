"""Benchmarks run as `mmrwkv bench NAME`: each module has `add_arguments(parser)` and `run(args)`."""

# name -> (module, one-line description)
BENCHMARKS = {
    "wkv": ("mmrwkv.bench.wkv", "forward+backward time of each WKV backend, per op"),
    "decode": ("mmrwkv.bench.decode", "RNN-mode decode tokens/s vs the rwkv package and the bandwidth bound"),
    "batch": ("mmrwkv.bench.batch", "batched RNN-mode decode: rows stepped one at a time (exact) vs one batched step"),
    "context": ("mmrwkv.bench.context", "per-token decode time and memory vs context: RWKV vs a KV-cache Transformer"),
    "chat": ("mmrwkv.bench.chat", "multi-turn chat latency with state reuse and the image prefix cache"),
    "train": ("mmrwkv.bench.train", "training tokens/s of the default recipe, chunked vs reference WKV"),
    "tokenizer": ("mmrwkv.bench.tokenizer", "World tokenizer load time and encode MB/s vs the authors' TRIE_TOKENIZER"),
    "demo": ("mmrwkv.bench.demo", "time to first token and streaming tokens/s of the chat demo"),
    "stream": ("mmrwkv.bench.stream", "an hour of live audio: per-window time, RTF and RSS vs a Transformer"),
}
