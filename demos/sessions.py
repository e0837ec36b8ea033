"""Per-browser-session chat state for the demos, and a store that evicts idle sessions.

Every session owns its `ChatSession` (the RNN state across turns), its own `PrefixCache` (prefix states and
preprocessed uploads, by content) and the messages its chat window shows; nothing of it is reachable from
another session. The store bounds memory: sessions idle longer than `ttl_s` are dropped (a sweeper thread and
every access check), and past `max_sessions` the least recently used idle ones go first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

DEFAULT_CACHE_BYTES = 64 * 2**20
DEFAULT_MEDIA_ITEMS = 16
MAX_REMEMBERED = 4096


class DemoSession:
    """One browser session: model key, ChatSession + private PrefixCache (states and preprocessed uploads), shown
    messages, busy/stop flags."""

    def __init__(self, sid: str, *, cache_bytes: int = DEFAULT_CACHE_BYTES, now: float = 0.0):
        self.sid = sid
        self.cache_bytes = cache_bytes
        self.model_key: str | None = None
        self.chat: Any = None
        self.messages: list[dict] = []
        self.last_used = now
        # True when this id had a session that was evicted for idling (the tab may still show the old chat)
        self.expired = False
        self.stop = threading.Event()
        self._busy = False
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether an answer is streaming in this session now."""
        return self._busy

    def try_begin(self) -> bool:
        """Claim the session for one answer; False when another answer is still streaming."""
        with self._lock:
            if self._busy:
                return False
            self._busy = True
            self.stop.clear()
            return True

    def end(self) -> None:
        """Release the claim taken by `try_begin`."""
        with self._lock:
            self._busy = False

    def bind(self, key: str, model: Any) -> bool:
        """Chat with `model` (registry `key`); a different model than before starts a new conversation.

        Returns True when the conversation was (re)started.
        """
        from mmrwkv.inference.prefix_cache import PrefixCache
        from mmrwkv.inference.session import ChatSession

        if key == self.model_key and self.chat is not None:
            return False
        cache = PrefixCache(max_bytes=self.cache_bytes, max_media=DEFAULT_MEDIA_ITEMS)
        self.chat = ChatSession(model, cache=cache)
        self.model_key = key
        return True

    def reset(self) -> None:
        """Forget the conversation and the shown messages (the model and the prefix cache stay)."""
        if self.chat is not None:
            self.chat.reset()
        self.messages = []

    @property
    def nbytes(self) -> int:
        """Bytes of the RNN state and the prefix cache this session holds."""
        if self.chat is None:
            return 0
        state = self.chat.state.nbytes if self.chat.state is not None else 0
        return state + self.chat.cache.nbytes


class SessionStore:
    """Session id -> DemoSession, with idle eviction after `ttl_s` and at most `max_sessions` idle sessions."""

    def __init__(self, *, ttl_s: float = 1800.0, max_sessions: int = 64, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.cache_bytes = cache_bytes
        self.clock = clock
        self.evicted = 0
        self._sessions: OrderedDict[str, DemoSession] = OrderedDict()
        # ids of evicted sessions (bounded), so a returning tab can be told its chat was cleared
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self._closing = threading.Event()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: str) -> bool:
        return sid in self._sessions

    def sessions(self) -> list[DemoSession]:
        """The sessions held now (a snapshot)."""
        with self._lock:
            return list(self._sessions.values())

    def get(self, sid: str) -> DemoSession:
        """The session `sid` (created on first use), marked as used now."""
        if not sid:
            raise ValueError("session id is empty")
        self.evict_idle()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                session = DemoSession(sid, cache_bytes=self.cache_bytes, now=self.clock())
                session.expired = self._gone.pop(sid, False) is None
                self._sessions[sid] = session
            session.last_used = self.clock()
            self._sessions.move_to_end(sid)
            self._evict_over_limit(keep=sid)
            return session

    def drop(self, sid: str) -> None:
        """Forget session `sid` (its tab closed); a streaming answer is asked to stop."""
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is not None:
            session.stop.set()

    def evict_idle(self) -> list[str]:
        """Drop sessions idle for longer than `ttl_s` (never one that is streaming); their ids."""
        now = self.clock()
        with self._lock:
            old = [sid for sid, s in self._sessions.items() if now - s.last_used > self.ttl_s and not s.busy]
            for sid in old:
                self._evict(sid)
        return old

    def _evict_over_limit(self, keep: str) -> None:
        # least recently used first; a streaming session and the one being handed out are never cut off
        for sid in [sid for sid, s in self._sessions.items() if not s.busy and sid != keep]:
            if len(self._sessions) <= self.max_sessions:
                break
            self._evict(sid)

    def _evict(self, sid: str) -> None:
        del self._sessions[sid]
        self.evicted += 1
        self._gone[sid] = None
        while len(self._gone) > MAX_REMEMBERED:
            self._gone.popitem(last=False)

    @property
    def nbytes(self) -> int:
        """Bytes of RNN states and prefix caches held by all sessions."""
        return sum(s.nbytes for s in self.sessions())

    def start_sweeper(self, interval_s: float | None = None) -> None:
        """Evict idle sessions every `interval_s` seconds (default ttl/4, at least 1 s) on a daemon thread."""
        if self._sweeper is not None:
            return
        interval = interval_s if interval_s is not None else max(1.0, self.ttl_s / 4)

        def sweep() -> None:
            while not self._closing.wait(interval):
                self.evict_idle()

        self._sweeper = threading.Thread(target=sweep, name="mmrwkv-demo-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper thread."""
        self._closing.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None
