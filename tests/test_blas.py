"""The optimized BLAS loaded ahead of MLX: it is used, and its matmul agrees with numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pathlib import Path

from finhrm_cli.blas import info, mlx_core

PROBE = (
    "import json, warnings\n"
    "with warnings.catch_warnings(record=True) as w:\n"
    "    warnings.simplefilter('always')\n"
    "    from finhrm_cli import blas; st = blas.ensure()\n"
    "import mlx.core as mx\n"
    "print(json.dumps({'kind': st['kind'], 'warnings': [str(x.message) for x in w]}))\n"
)


def test_loaded_matmul_agrees_with_numpy():
    mx = mlx_core()
    rng = np.random.default_rng(0)
    for m, k, n in ((64, 128, 384), (640, 128, 128), (3, 5, 7)):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        got = np.array(mx.array(a) @ mx.array(b))
        np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")
def test_an_optimized_blas_is_loaded_on_linux():
    assert info()["kind"] in ("mkl", "openblas", "custom"), info()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")
def test_missing_blas_warns_once_with_the_fix():
    env = {**os.environ, "FINHRM_BLAS": "/nonexistent/libcblas.so"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    res = json.loads(out.stdout)
    assert res["kind"] == "reference"
    assert len(res["warnings"]) == 1 and "pip install mkl" in res["warnings"][0]
    off = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, "FINHRM_BLAS": "none"}, check=True)
    assert json.loads(off.stdout) == {"kind": "reference", "warnings": []}


KERNEL_PROBE = (
    "import json, os\n"
    "from finhrm_cli.blas import mlx_core, info\n"
    "mx = mlx_core()\n"
    "f = mx.compile(lambda a, b: mx.exp(a) * b + 0.25)\n"
    "mx.eval(f(mx.ones(8), mx.ones(8)))\n"
    "import tempfile\n"
    "print(json.dumps({'cache': info().get('kernel_cache'), 'tmpdir': os.environ.get('TMPDIR'),\n"
    "                  'python_tmp': tempfile.gettempdir()}))\n"
)


PRIVATE_PROBE = (
    "import stat, pathlib\n"
    "p = pathlib.Path(os.environ['TMPDIR'])\n"
    "print(json.dumps({'mode': oct(stat.S_IMODE(p.stat().st_mode)), 'kernels': bool(list(p.rglob('*.so')))}))\n"
)


def test_compiled_kernels_are_cached_in_finhrms_cache_folder(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "FINHRM_CACHE": str(cache), "TMPDIR": str(tmp_path / "systmp")}
    (tmp_path / "systmp").mkdir()
    out = subprocess.run([sys.executable, "-c", KERNEL_PROBE], capture_output=True, text=True, env=env, check=True)
    res = json.loads(out.stdout)
    assert res["cache"] == str(cache / "kernels") == res["tmpdir"]
    assert res["python_tmp"] == str(tmp_path / "systmp")  # finhrm's own temp files stay put
    built = list((cache / "kernels").rglob("*.so"))
    assert built, "the compiled kernel did not land in finhrm's cache folder"
    assert not list((tmp_path / "systmp").rglob("*.so"))


def test_kernel_cache_opt_out_compiles_into_a_private_temporary_folder(tmp_path):
    """FINHRM_CACHE=tmp: no persistent cache, and never the shared /tmp/mlx another user
    could have made first: a 0700 folder of this process's, removed at exit."""
    env = {**os.environ, "FINHRM_CACHE": "tmp", "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", KERNEL_PROBE + PRIVATE_PROBE], capture_output=True, text=True,
                         env=env, check=True)
    res = json.loads(out.stdout.splitlines()[0])
    private = Path(res["tmpdir"])
    assert res["cache"] is None and res["python_tmp"] == str(tmp_path)
    assert private.parent == tmp_path and private.name.startswith("finhrm-kernels-")
    assert json.loads(out.stdout.splitlines()[1]) == {"mode": "0o700", "kernels": True}
    assert not private.exists()          # removed at exit
    assert not (tmp_path / "mlx").exists()


def test_unwritable_cache_folder_falls_back_quietly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = {**os.environ, "FINHRM_CACHE": str(blocker / "sub"), "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", KERNEL_PROBE], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout)["cache"] is None


@pytest.mark.skipif(not os.path.exists("/proc/stat") or (os.cpu_count() or 1) < 2, reason="needs /proc/stat and 2+ cores")
def test_blas_threads_leave_the_cores_other_work_holds(monkeypatch):
    from finhrm_cli import blas

    n = os.cpu_count()
    monkeypatch.setattr(blas, "cores_busy", lambda sample_s=0.1: 0.2)
    assert blas.auto_threads() == n
    monkeypatch.setattr(blas, "cores_busy", lambda sample_s=0.1: 1.0)
    assert blas.auto_threads() == n - 1
    monkeypatch.setattr(blas, "cores_busy", lambda sample_s=0.1: n + 3.0)
    assert blas.auto_threads() == 1
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        monkeypatch.undo()
        assert blas.cores_busy(0.3) >= 0.7   # the hog's core is seen as taken
    finally:
        hog.kill()
        hog.wait()


def test_a_thread_count_the_user_set_is_kept(tmp_path):
    probe = "import os; from finhrm_cli import blas; blas.ensure(); print(os.environ['MKL_NUM_THREADS'])"
    env = {**os.environ, "MKL_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "3"


def test_cores_busy_measures_over_the_start_up_and_leaves_out_its_own_work(monkeypatch):
    """The reading taken first thing (start_sample) spans the imports; the process's own CPU
    time in that window is not 'other work', no sleep is needed once the window is long, and a
    stale reading is replaced.  /proc/stat and the clocks are faked, so the machine's load
    cannot sway it."""
    import time

    from finhrm_cli import blas

    hz = os.sysconf("SC_CLK_TCK")
    n = os.cpu_count() or 1
    readings = iter([(0, 0), (n * hz // 2, n * hz // 2)])  # half a second, every core busy
    clock = {"wall": 100.0, "own": 5.0}
    slept = []
    monkeypatch.setattr(blas, "_START", {})
    monkeypatch.setattr(blas, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(time, "sleep", slept.append)
    blas.start_sample()
    clock["wall"] += 0.5            # the imports: half a second,
    clock["own"] += 0.5             # all of it this process's own work on one core
    busy = blas.cores_busy(0.1)
    assert slept == [0.0]           # the window was long enough: no real sleep
    assert busy == pytest.approx(n - 1)  # the other cores are taken, ours is not counted
    readings = iter([(0, 0), (0, 0), (0, n * hz // 10)])  # the stale one, a fresh one, after the sleep
    monkeypatch.setattr(blas, "_cpu_times", lambda: next(readings))
    blas.start_sample()
    clock["wall"] += 10             # a stale reading is replaced and slept for, not used
    assert blas.cores_busy(0.1) == 0.0
    assert slept[-1] == pytest.approx(0.1)
