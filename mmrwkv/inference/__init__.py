"""Inference: the RWKV engine (`engine`: one-token steps and prefill, route by route), the generation loops'
step interface (`stepper`), prompt prefill (`prefill`), sampling and streaming generation (`generate`), the
content-keyed cache of prompt states and preprocessed media (`prefix_cache`), multi-turn chat sessions
(`session`) and live streams into one constant-size state (`stream`). Modules are imported where used (none at
import)."""
