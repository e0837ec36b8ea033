"""`SamplingConfig`: how the next token is picked, defined once for the generator and for recipes (the recipe's
`generation` section is this dataclass with recipe defaults). No torch here, so recipes load without it."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrwkv.errors import ConfigError


@dataclass
class SamplingConfig:
    """How to pick each next token. Penalties follow the authors' chat tool (`rwkv.utils.PIPELINE.generate`):
    every generated token's occurrence count is decayed by `penalty_decay` each step, and a token's logit is
    lowered by `presence_penalty` (if it was ever generated) plus `frequency_penalty * count`; a token whose text
    is a run of ' \t0123456789' (a space, tab, digit, '12', ...) counts 0, so it gets the presence penalty only.
    """

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = no limit
    top_p: float = 1.0  # 1.0 = no limit
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    banned_ids: list[int] = field(default_factory=list)
    # None: the tokenizer's `special.eos`; [] never stops on a token
    eos_ids: list[int] | None = None

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise ConfigError(f"SamplingConfig.{problem}")

    def problem(self) -> str | None:
        """The first field that breaks its rule, as "name = value must be ...", or None."""
        checks = [
            ("temperature", self.temperature >= 0, "must be >= 0"),
            ("top_k", self.top_k >= 0, "must be >= 0"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("penalty_decay", 0 <= self.penalty_decay <= 1, "must be in [0, 1]"),
            ("max_tokens", self.max_tokens >= 0, "must be >= 0"),
            (
                "stop",
                not isinstance(self.stop, str) and all(isinstance(s, str) and s for s in self.stop),
                "must be a list of non-empty strings",
            ),
        ]
        for name, ok, rule in checks:
            if not ok:
                return f"{name} = {getattr(self, name)!r} {rule}"
        return None

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0

    @property
    def decoding(self) -> str:
        """A label for reports: "greedy" or the sampling settings."""
        if self.top_k == 1 or self.temperature == 0.0:
            return "greedy"
        return f"sampling (temperature {self.temperature}, top_p {self.top_p}, top_k {self.top_k})"
