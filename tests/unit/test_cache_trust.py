"""The cache trust rule (finhrm_cli.cache), in this process: a cache path a shell would
interpret, a folder of another user's or inside the runs home, a damaged library are refused,
and an unusable cache never stops a command.  The probes that compile and load real kernels in
fresh processes are in e2e/test_cache_trust_probes.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from finhrm_cli import cache
from helpers import some_shared_object as _some_shared_object


# --------------------------------------------------------------------------- the path rule

@pytest.mark.parametrize("path, why", [
    ("relative/cache", "not an absolute path"),
    ("/x/$(touch pwned)/cache", "'$'"),
    ('/x/a"b/cache', "'\"'"),
    ("/x/`id`", "'`'"),
    ("/x/a;b", "';'"),
    ("/x/new\nline", "'\\n'"),
    ("/x/" + "a" * 300, "longer than 255 bytes"),
])
def test_paths_a_shell_or_the_file_system_would_trip_on_are_refused(path, why):
    assert why in cache.path_problem(Path(path))


@pytest.mark.parametrize("path", ["/home/ana/.cache/finhrm", "/Users/José Pérez/Library/Caches/finhrm",
                                  "/data/c@che,v2/x=1+2~%/a-b_c.d"])
def test_plain_paths_pass(path):
    assert cache.path_problem(Path(path)) is None


# --------------------------------------------------------------------------- ownership and modes

def test_another_users_cache_folder_is_refused(tmp_path, monkeypatch):
    c = tmp_path / "cache"
    c.mkdir(mode=0o700)
    monkeypatch.setenv("FINHRM_CACHE", str(c))
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 12345)   # as seen by someone else
    with pytest.warns(Warning, match="belongs to another user"):
        assert cache.trusted_folder("forecasts") is None


# --------------------------------------------------------------------------- damaged kernels

def test_elf_check_sees_truncation():
    data = Path(_some_shared_object()).read_bytes()
    assert cache._elf_whole(data)
    assert not cache._elf_whole(data[: len(data) // 2])
    assert not cache._elf_whole(b"\x7fELF" + b"\0" * 100)
    assert not cache._elf_whole(b"not an elf file at all" * 10)


# --------------------------------------------------------------------------- where the cache may be

def test_a_relative_cache_path_makes_no_folder_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FINHRM_CACHE", "rel-cache")
    with pytest.warns(Warning, match="not an absolute path"):
        assert cache.trusted_folder("forecasts") is None
    assert not (tmp_path / "rel-cache").exists()


def test_a_cache_inside_the_runs_home_or_a_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FINHRM_HOME", str(tmp_path / "home"))
    home = tmp_path / "home" / "runs"
    run = home / "prices-20240101-120000"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "history.jsonl").write_text("")
    for inside in (home / "cache", run / "cache"):
        monkeypatch.setenv("FINHRM_CACHE", str(inside))
        with pytest.warns(Warning, match="runs home"):
            assert cache.trusted_folder("forecasts") is None
        assert not inside.exists()
    elsewhere = tmp_path / "else" / "run-like"
    elsewhere.mkdir(parents=True)
    (elsewhere / "config.json").write_text("{}")
    (elsewhere / "model.safetensors").write_text("")
    monkeypatch.setenv("FINHRM_CACHE", str(elsewhere / "cache"))
    with pytest.warns(Warning, match="run folder"):
        assert cache.trusted_folder("forecasts") is None


def test_an_overlong_cache_path_only_turns_the_cache_off(tmp_path, monkeypatch):
    from finhrm_cli.forecast import memo

    monkeypatch.setenv("FINHRM_CACHE", str(tmp_path / ("a" * 300)))
    x = np.ones((3, 4, 2), np.float32)
    with pytest.warns(Warning, match="255 bytes"):
        out = memo.predict(memo.identity("ab" * 32, None), None, x, lambda m, v: np.zeros((len(v), 2), np.float32))
    assert out.shape == (3, 2)


def test_a_refused_cache_warns_once(tmp_path, monkeypatch):
    import warnings

    monkeypatch.setenv("FINHRM_CACHE", "again-relative")
    monkeypatch.setattr(cache, "_WARNED", set())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):
            cache.trusted_folder("forecasts")
    assert len(w) == 1


# --------------------------------------------------------------------------- /proc/stat

@pytest.mark.parametrize("text", ["", "cpu\n", "cpu 1 2\n", "cpu a b c d\n"])
def test_a_short_or_odd_proc_stat_falls_back(tmp_path, monkeypatch, text):
    from finhrm_cli import blas

    fake = tmp_path / "stat"
    fake.write_text(text)
    monkeypatch.setattr(blas, "PROC_STAT", str(fake))
    assert blas._cpu_times() is None
    assert blas.cores_busy(0.0) >= 0.0
    assert 1 <= blas.auto_threads() <= (os.cpu_count() or 1)
