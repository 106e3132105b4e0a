"""The cache trust rule (finhrm_cli.cache): a cache folder is code, so a folder that others may
write, a path a shell would interpret, a damaged or foreign kernel never reach MLX, and an
unusable cache never stops a command."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finhrm_cli import cache

PROBE = (
    "import json, os\n"
    "from finhrm_cli.blas import mlx_core, info\n"
    "mx = mlx_core()\n"
    "f = mx.compile(lambda a, b: mx.exp(a) * b + 0.25)\n"
    "print(json.dumps({'cache': info().get('kernel_cache'), 'tmpdir': os.environ.get('TMPDIR'),\n"
    "                  'value': mx.eval(f(mx.ones(8), mx.ones(8))) or float(f(mx.ones(8), mx.ones(8))[0])}))\n"
)

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None or not sys.platform.startswith("linux"),
                                    reason="MLX's CPU kernels need g++ (Linux)")


def probe(env_cache, tmp_path, **extra):
    systmp = tmp_path / "systmp"
    systmp.mkdir(exist_ok=True)
    env = {**os.environ, "FINHRM_CACHE": str(env_cache), "TMPDIR": str(systmp), **extra}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    return out


def kernels(folder: Path) -> list[Path]:
    return sorted(folder.rglob("lib*.so"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A trusted cache that the probe has filled with its kernel(s)."""
    base = tmp_path_factory.mktemp("built")
    out = probe(base / "cache", base)
    assert out.returncode == 0, out.stderr
    libs = kernels(base / "cache" / "kernels")
    assert libs
    return base / "cache", libs


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


@needs_compiler
def test_shell_metacharacters_in_the_cache_path_run_nothing(tmp_path):
    target = tmp_path / "pwned"
    evil = tmp_path / f"c$(touch {target})" / "x"
    out = probe(evil, tmp_path)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["value"] == pytest.approx(np.e + 0.25)
    assert not target.exists()
    assert res["cache"] is None and "finhrm-kernels-" in res["tmpdir"]
    assert out.stderr.count("which a shell command would interpret") == 1


@needs_compiler
def test_a_double_quote_in_home_does_not_break_compiling(tmp_path):
    home = tmp_path / 'my"home'
    home.mkdir()
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(systmp), "XDG_CACHE_HOME": str(home / ".cache")}
    env.pop("FINHRM_CACHE", None)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["value"] == pytest.approx(np.e + 0.25)
    assert not (home / ".cache" / "finhrm").exists()


# --------------------------------------------------------------------------- ownership and modes

@needs_compiler
def test_a_world_writable_cache_with_a_planted_kernel_is_not_loaded(tmp_path, built):
    """Another user's planted library (a constructor that leaves a mark) never runs."""
    src_cache, libs = built
    mark = tmp_path / "constructor-ran"
    c = tmp_path / "evil.c"
    c.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void f(void) '
                 f'{{ FILE *p = fopen("{mark}", "w"); if (p) fclose(p); }}\n')
    shared = tmp_path / "shared"
    shutil.copytree(src_cache, shared)
    for lib in kernels(shared):
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(c)], check=True)
    for p in [shared, *shared.rglob("*")]:
        os.chmod(p, 0o777 if p.is_dir() else 0o666)
    out = probe(shared, tmp_path)
    assert out.returncode == 0, out.stderr
    assert not mark.exists()
    assert "anyone may write" in out.stderr or "group or others" in out.stderr
    assert json.loads(out.stdout)["cache"] is None


@needs_compiler
def test_a_cache_folder_under_a_folder_others_may_write_is_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)          # not sticky: anyone could swap the cache folder
    out = probe(open_dir / "cache", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "anyone may write" in out.stderr
    assert not (open_dir / "cache").exists()


@needs_compiler
def test_folders_are_private_even_under_umask_000(tmp_path):
    c = tmp_path / "cache"
    old = os.umask(0)
    try:
        out = probe(c, tmp_path)
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    for d in [c, *[p for p in c.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_another_users_cache_folder_is_refused(tmp_path, monkeypatch):
    c = tmp_path / "cache"
    c.mkdir(mode=0o700)
    monkeypatch.setenv("FINHRM_CACHE", str(c))
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 12345)   # as seen by someone else
    with pytest.warns(Warning, match="belongs to another user"):
        assert cache.trusted_folder("forecasts") is None


# --------------------------------------------------------------------------- damaged kernels

@needs_compiler
@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_kernel_beside_its_source_is_rebuilt(tmp_path, built, damage):
    src_cache, _ = built
    c = tmp_path / "cache"
    shutil.copytree(src_cache, c)
    for lib in kernels(c):
        if damage == "truncated":     # a compile killed half-way: loading it would be SIGBUS
            data = lib.read_bytes()
            lib.write_bytes(data[: len(data) // 2])
        else:                         # a whole library, but not this kernel
            shutil.copy(sys.executable if Path(sys.executable).suffix == ".so" else _some_shared_object(), lib)
    out = probe(c, tmp_path)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["cache"] == str(c / "kernels") and res["value"] == pytest.approx(np.e + 0.25)
    assert all(cache._elf_whole(p.read_bytes()) for p in kernels(c))


@needs_compiler
def test_a_damaged_kernel_without_its_source_is_named_and_left_alone(tmp_path, built):
    src_cache, _ = built
    c = tmp_path / "cache"
    shutil.copytree(src_cache, c)
    lib = kernels(c)[0]
    lib.with_name(lib.name[3:-3] + ".cpp").unlink()
    lib.write_bytes(lib.read_bytes()[:100])
    out = probe(c, tmp_path)
    assert out.returncode == 0, out.stderr
    assert str(lib) in out.stderr and "damaged or foreign" in out.stderr
    assert lib.exists() and len(lib.read_bytes()) == 100     # not finhrm's to delete
    assert json.loads(out.stdout)["cache"] is None


def _some_shared_object() -> str:
    import numpy

    found = sorted(Path(numpy.__file__).parent.rglob("*.so"))
    return str(found[0])


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


def test_finhrm_version_runs_with_an_empty_proc_stat(tmp_path):
    """The CLI samples /proc/stat at import: a container's odd file must not stop --version."""
    code = ("import builtins, io\n"
            "real = builtins.open\n"
            "builtins.open = lambda f, *a, **k: io.StringIO('') if f == '/proc/stat' else real(f, *a, **k)\n"
            "import sys; sys.argv = ['finhrm', '--version']\n"
            "from finhrm_cli.cli import main\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "finhrm" in out.stdout and "Traceback" not in out.stderr
