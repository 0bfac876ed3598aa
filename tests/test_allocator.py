"""core/app/allocator.py: the malloc arena limit is set once, never over an administrator's MALLOC_ARENA_MAX."""

from __future__ import annotations

import pytest

from core.engine import allocator


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_done", {})
    monkeypatch.delenv(allocator.ARENAS_ENV, raising=False)


def test_environment_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ARENAS_ENV, "4")
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_libc", lambda: FakeLibc())
    assert allocator.limit_arenas() is False
    assert calls == []


def test_set_once_with_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_libc", lambda: FakeLibc())
    assert allocator.limit_arenas(2) is True
    assert allocator.limit_arenas(2) is False
    assert calls == [(allocator.M_ARENA_MAX, 2)]


def test_without_glibc_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    assert allocator.limit_arenas() is False
    assert allocator.trim() is False
