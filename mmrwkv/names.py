"""Names shared by the recipe configs and the code they configure, defined once (this module imports nothing, so
configs load without torch)."""

# RWKV generations and sub-versions a model config can name
VERSIONS = ("4", "5.0", "5.1", "5.2", "6", "7")
# media kinds an encoder can feed into the token stream
MODALITIES = ("image", "audio")
# where a turn's media placeholders go relative to its text (chat template)
PLACEMENTS = ("inline", "first", "sandwich", "last")
# the label of a position without loss (cross-entropy's ignore_index): templates, collation and the loss share it
IGNORE = -100
