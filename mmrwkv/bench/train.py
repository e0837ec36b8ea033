"""`mmrwkv bench train`: training tokens/s of a recipe (the default one unless told), chunked vs reference WKV.

Both backends train the same freshly built model on the same fixed batches (full steps: forward, masked loss,
backward, AdamW); rounds alternate between the backends so they share the machine's load, and the median
round counts. Tokens are the non-padding tokens of the batches. With --seq-len the batches are text-only rows of that
many random token ids instead of the recipe's data (its rows are a few hundred tokens; the WKV backends differ most
on long sequences).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

BACKENDS = ("reference", "chunked")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmrwkv bench train`."""
    parser.add_argument("--recipe", default="recipes/easy_vqa.yaml", help="recipe YAML (default: the default recipe)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per round and backend")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median counts")
    parser.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for this run")
    parser.add_argument(
        "--seq-len", type=int, default=0, help="text-only batches of this many random tokens per row (0: the recipe's)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")


def _batches(cfg, model, count: int, seq_len: int = 0) -> list[dict]:
    if seq_len > 0:  # text only: no media placeholder ids
        from mmrwkv.names import MODALITIES

        special = {getattr(model.tokenizer.special, m, None) for m in MODALITIES}
        text = torch.tensor([i for i in range(model.backbone.config.vocab_size) if i not in special])
        gen = torch.Generator().manual_seed(0)
        shape = (cfg.train.batch_size, seq_len)
        ids = [text[torch.randint(0, len(text), shape, generator=gen)] for _ in range(count)]
        return [{"input_ids": x, "labels": x.clone()} for x in ids]
    from mmrwkv.training.build import build_datasets

    train_set, _, collate = build_datasets(cfg, model)
    bsz = cfg.train.batch_size
    return [collate([train_set[(i * bsz + j) % len(train_set)] for j in range(bsz)]) for i in range(count)]


def _time_steps(module, optimizer, batches: list[dict]) -> float:
    start = time.perf_counter()
    for batch in batches:
        loss = module._loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def measure(cfg, *, steps: int, rounds: int, seq_len: int = 0) -> dict[str, float]:
    """Median training tokens/s per backend over `rounds` alternating rounds of `steps` steps."""
    from mmrwkv.training.build import build_model
    from mmrwkv.training.module import MultimodalLM
    from mmrwkv.training.train import optim_settings
    from mmrwkv.training.trainer import wkv_backend

    model = build_model(cfg)
    batches = _batches(cfg, model, steps, seq_len)
    tokens = sum(_real_tokens(b) for b in batches)
    runs = {}
    for name in BACKENDS:
        module = MultimodalLM(copy.deepcopy(model), optim_settings(cfg, steps * rounds))
        runs[name] = (module, module.configure_optimizers()["optimizer"])
    seconds: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for _ in range(rounds):
        for name in BACKENDS:
            with wkv_backend(name):
                seconds[name].append(_time_steps(*runs[name], batches))
    return {name: tokens / statistics.median(seconds[name]) for name in BACKENDS}


def _real_tokens(batch: dict) -> int:
    # right padding: a row's real length ends at its last labelled token
    labelled = batch["labels"] != -100  # (B, T)
    positions = torch.arange(labelled.shape[1]).expand_as(labelled)
    return int((torch.where(labelled, positions, -1).max(dim=1).values + 1).sum())


def run(args: argparse.Namespace) -> int:
    """Build the recipe's model and data, time both backends, print the table."""
    from mmrwkv.config import load_config

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides) + ([f"train.batch_size={args.batch_size}"] if args.batch_size else [])
    cfg = load_config(args.recipe, overrides)
    from mmrwkv.kernels import cpu as native

    print(native.route(), flush=True)
    rates = measure(cfg, steps=args.steps, rounds=args.rounds, seq_len=args.seq_len)
    print(
        f"recipe {cfg.name}: batch {cfg.train.batch_size}, {args.steps} steps x {args.rounds} rounds, "
        f"{torch.get_num_threads()} CPU threads, "
        + (f"text-only rows of {args.seq_len} random tokens" if args.seq_len > 0 else "the recipe's data")
    )
    print(f"{'backend':<10} {'tokens/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<10} {rate:>10.0f}")
    print(f"chunked / reference: {rates['chunked'] / rates['reference']:.2f}x")
    return 0
