"""The cache trust rule (finhrm_cli.cache) against real kernels, compiled and loaded in fresh
Python processes: a cache folder is code, so a folder that others may write, a path a shell
would interpret, a damaged or foreign kernel never reach MLX, and an unusable cache never stops
a command."""

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
from helpers import some_shared_object as _some_shared_object


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


# --------------------------------------------------------------------------- /proc/stat

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


def test_whole_kernels_are_read_once_and_a_changed_one_again(tmp_path, built, monkeypatch):
    """The start-up check reads a kernel only while it is new or changed (VERIFIED)."""
    from finhrm_cli import cache

    src_cache, _ = built
    c = tmp_path / "cache"
    shutil.copytree(src_cache, c)
    folder = c / "kernels"
    real, reads = cache.open_trusted, []

    def counting(path):
        if path.name.endswith(".so"):
            reads.append(path.name)
        return real(path)

    monkeypatch.setattr(cache, "open_trusted", counting)
    assert cache.check_kernels(folder) is None and reads
    first = len(reads)
    assert cache.check_kernels(folder) is None and len(reads) == first      # nothing read again
    lib = kernels(c)[0]
    lib.write_bytes(lib.read_bytes()[:100])                                  # cut short later on
    assert cache.check_kernels(folder) is None and len(reads) == first + 1   # read, found, rebuilt
    assert not lib.exists()
