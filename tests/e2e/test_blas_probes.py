"""The optimized BLAS and MLX's compiled kernels, probed in fresh Python processes: a missing
BLAS warns once with the fix, kernels land in finhrm's cache folder (or a private temporary
one), and a thread count the user set is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = (
    "import json, warnings\n"
    "with warnings.catch_warnings(record=True) as w:\n"
    "    warnings.simplefilter('always')\n"
    "    from finhrm_cli import blas; st = blas.ensure()\n"
    "import mlx.core as mx\n"
    "print(json.dumps({'kind': st['kind'], 'warnings': [str(x.message) for x in w]}))\n"
)


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


def test_a_thread_count_the_user_set_is_kept(tmp_path):
    probe = "import os; from finhrm_cli import blas; blas.ensure(); print(os.environ['MKL_NUM_THREADS'])"
    env = {**os.environ, "MKL_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "3"
