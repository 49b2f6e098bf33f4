"""providers/memo.py: a backend's bounded memo of what cannot change any more (issue 23 item 3)."""

from __future__ import annotations

import threading

from pushpool.providers.memo import Memo


def test_the_least_recently_used_entry_goes_first_once_full() -> None:
    memo = Memo(3)
    for key in "abc":
        memo.put(key, key.upper())
    assert memo.get("a") == "A"  # used: b is now the oldest
    memo.put("d", "D")
    assert "b" not in memo and [memo.get(k) for k in "acd"] == ["A", "C", "D"] and len(memo) == 3


def test_a_memo_shared_by_threads_never_grows_past_its_size() -> None:
    memo = Memo(50)

    def fill(offset: int) -> None:
        for i in range(2_000):
            memo.put((offset, i), i)
            memo.get((offset, i - 1))

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(memo) == 50
