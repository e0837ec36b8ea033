"""Inference: the RWKV engine (`engine`: one-token steps and prefill, route by route), the generation loops'
step interface (`stepper`) and prompt prefill (`prefill`). Modules are imported where used (none at import)."""
