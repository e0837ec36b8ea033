"""SessionStore: per-session objects, idle eviction after the time limit, bounded session count."""

import time

import pytest

from mmrwkv.demos.sessions import SessionStore
from mmrwkv.inference.generate import SamplingConfig


class Clock:
    """A settable clock for eviction tests."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_session_id_gets_its_own_session_object():
    store = SessionStore()
    a, b = store.get("a"), store.get("b")
    assert a is not b and store.get("a") is a
    assert len(store) == 2


def test_idle_sessions_are_evicted_after_the_time_limit():
    clock = Clock()
    store = SessionStore(ttl_s=60, clock=clock)
    store.get("old")
    clock.now = 50
    store.get("recent")
    clock.now = 100
    assert store.evict_idle() == ["old"]
    assert "old" not in store and "recent" in store
    clock.now = 111
    store.get("new")  # every access also sweeps
    assert "recent" not in store and store.evicted == 2


def test_use_keeps_a_session_alive():
    clock = Clock()
    store = SessionStore(ttl_s=60, clock=clock)
    for t in range(0, 300, 30):
        clock.now = t
        store.get("active")
    assert "active" in store and store.evicted == 0


def test_a_streaming_session_is_never_evicted():
    clock = Clock()
    store = SessionStore(ttl_s=10, max_sessions=1, clock=clock)
    busy = store.get("busy")
    assert busy.try_begin()
    clock.now = 100
    store.get("other")
    assert "busy" in store
    busy.end()
    clock.now = 200
    store.evict_idle()
    assert "busy" not in store


def test_session_count_is_bounded_least_recently_used_first():
    store = SessionStore(max_sessions=3)
    for sid in "abcd":
        store.get(sid)
    assert len(store) == 3 and "a" not in store
    store.get("b")
    store.get("e")
    assert "b" in store and "c" not in store


def test_dropping_a_session_asks_its_answer_to_stop():
    store = SessionStore()
    session = store.get("tab")
    assert session.try_begin()
    store.drop("tab")
    assert session.stop.is_set() and "tab" not in store


def test_second_claim_of_a_busy_session_is_refused():
    session = SessionStore().get("s")
    assert session.try_begin()
    assert not session.try_begin()
    session.end()
    assert session.try_begin()


def test_sweeper_thread_evicts_idle_sessions():
    store = SessionStore(ttl_s=0.05)
    store.get("idle")
    store.start_sweeper(interval_s=0.02)
    try:
        deadline = time.monotonic() + 5
        while "idle" in store and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "idle" not in store
    finally:
        store.close()


def test_evicted_sessions_free_their_state_and_cache(tiny_model, images):
    clock = Clock()
    store = SessionStore(ttl_s=60, clock=clock)
    for sid in ("a", "b"):
        session = store.get(sid)
        session.bind("tiny", tiny_model)
        "".join(session.chat.ask("hi", images=[images[0]], sampling=SamplingConfig(temperature=0, max_tokens=2)))
    held = store.nbytes
    assert held > 0 and store.get("a").chat.cache is not store.get("b").chat.cache
    clock.now = 1000
    store.evict_idle()
    assert store.nbytes == 0 and len(store) == 0


def test_empty_session_id_is_refused():
    with pytest.raises(ValueError, match="session id"):
        SessionStore().get("")


def test_a_returning_evicted_session_is_marked_expired_once():
    clock = Clock()
    store = SessionStore(ttl_s=10, clock=clock)
    store.get("tab")
    clock.now = 100
    store.evict_idle()
    assert store.get("tab").expired
    assert not store.get("never-seen").expired
    store.drop("tab")
    assert not store.get("tab").expired, "a closed tab is not an idle one"


def test_the_session_handed_out_is_never_the_one_evicted_for_space():
    store = SessionStore(max_sessions=1)
    busy = store.get("busy")
    assert busy.try_begin()
    fresh = store.get("fresh")
    assert "fresh" in store and store.get("fresh") is fresh
