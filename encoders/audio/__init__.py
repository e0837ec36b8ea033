"""Audio encoders: log-mel front end, `tiny_whisper`, torchaudio `wav2vec2` / `hubert` (registered on import)."""
