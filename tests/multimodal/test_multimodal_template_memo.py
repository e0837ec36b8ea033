"""The chat template remembers the ids of short texts (role prefixes, the generation prompt): same ids, bounded."""

from mmrwkv.data import template as chat_template
from mmrwkv.data.template import ChatTemplate, Turn
from mmrwkv.tokenizer import load_tokenizer

TOK = load_tokenizer("world")


class CountingTokenizer:
    """The World tokenizer, counting encode calls per text."""

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.special = TOK.special

    def encode(self, text):
        self.calls[text] = self.calls.get(text, 0) + 1
        return TOK.encode(text)


def test_repeated_turns_encode_short_texts_once_with_the_same_ids():
    tok = CountingTokenizer()
    template = ChatTemplate(tok, "first")
    turns = [Turn("user", "What shape is it?")]
    first = template.encode_turns(turns)
    again = template.encode_turns(turns)
    assert again.ids == first.ids == ChatTemplate(TOK, "first").encode_turns(turns).ids
    assert tok.calls["Assistant:"] == 1 and tok.calls["User: What shape is it?\n\n"] == 1
    again.ids.append(0)  # callers own what they get: the memo is not changed through it
    assert template.encode_turns(turns).ids == first.ids


def test_long_texts_are_not_kept_and_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(chat_template, "MEMO_ENTRIES", 3)
    tok = CountingTokenizer()
    template = ChatTemplate(tok, "first")
    long = "x" * (chat_template.MEMO_CHARS + 1)
    for text in (long, long, "a", "b", "c", "d"):
        template.encode_turn(Turn("user", text))
    assert tok.calls[f"User: {long}\n\n"] == 2
    assert len(template._memo) == 3 and "User: a\n\n" not in template._memo
