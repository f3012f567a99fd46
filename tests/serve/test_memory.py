"""serve/memory.py: the allocator settings `whispertune serve` applies, unless the environment sets them."""

from __future__ import annotations

import platform

import pytest

from whispertune.serve.memory import steady_malloc

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")


def test_both_settings_are_applied_on_glibc(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert steady_malloc() == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 256 * 1024}


def test_a_setting_the_environment_makes_is_left_to_it(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert steady_malloc() == {"MALLOC_MMAP_THRESHOLD_": 256 * 1024}
