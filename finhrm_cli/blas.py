"""Load an optimized CBLAS ahead of MLX on Linux.

The Linux ``mlx[cpu]`` wheel links netlib's reference BLAS, whose float32 matmul runs at a
few GFLOP/s.  MLX resolves ``cblas_sgemm`` and friends through the dynamic linker, so a
library loaded earlier with ``RTLD_GLOBAL`` takes precedence.  ``ensure()`` must therefore
run before the first ``import mlx``; every finhrm module that needs MLX imports it through
``finhrm_cli.blas.mlx_core()``.

Search order: ``$FINHRM_BLAS`` (a path, or ``none`` to opt out), Intel MKL installed from
PyPI with finhrm (``lib/libmkl_rt.so*`` under the environment prefix), then a system
OpenBLAS.  On macOS nothing is done: MLX uses Accelerate and Metal there.

**Kernel cache.**  MLX's CPU backend compiles each fused kernel of an ``mx.compile``'d
function with the system C++ compiler on first use and caches the shared object under
``std::filesystem::temp_directory_path() / "mlx" / VERSION / "cpu"``, that is under
``$TMPDIR`` (``/tmp`` by default).  A fresh container, a CI job or a reboot that clears the
temp folder pays the compiler again (docs/speed.md has the figures).
``kernel_cache()`` points ``TMPDIR`` at finhrm's own cache folder before MLX is imported
(``$FINHRM_CACHE``, else the platform's user cache folder, e.g. ``~/.cache/finhrm``), so
only the very first run on a machine compiles.  That folder is code: MLX loads the shared
objects in it and puts its path into a shell command, so it is used only under the trust
rule of ``finhrm_cli.cache``; otherwise, and with ``FINHRM_CACHE=tmp``, kernels compile into
a private temporary folder removed at exit (never the shared ``/tmp/mlx`` that any user may
create first).  Python's own ``tempfile`` keeps the system temp folder (it is resolved
before ``TMPDIR`` changes), so only MLX and the compiler it runs see the cache folder.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import warnings
from pathlib import Path

_STATE: dict = {"done": False, "path": None, "kind": None}


def _candidates() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    prefixes = []
    for p in (sys.prefix, sys.base_prefix, os.environ.get("CONDA_PREFIX")):
        if p and p not in prefixes:
            prefixes.append(p)
    for prefix in prefixes:
        for pat in ("lib/libmkl_rt.so.3", "lib/libmkl_rt.so.2", "lib/libmkl_rt.so"):
            out += [(f, "mkl") for f in sorted(glob.glob(os.path.join(prefix, pat)))]
    for pat in (
        "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
        "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
        "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
        "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
        "/usr/lib64/libopenblas.so.0",
        "/usr/lib/libopenblas.so.0",
    ):
        if os.path.exists(pat):
            out.append((pat, "openblas"))
    return out


THREAD_VARS = ("MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


PROC_STAT = "/proc/stat"


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat, or None off Linux."""
    try:
        with open(PROC_STAT) as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(v) < 4:  # empty or cut short (containers vary): fall back to the load average
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v) - idle, sum(v)


_START: dict = {}
STALE_SAMPLE_S = 2.0


def start_sample() -> None:
    """Take the first /proc/stat reading now (the command line calls this first thing), so
    that ``cores_busy`` can measure over the imports instead of sleeping."""
    import time

    if not _START:
        _START.update(cpu=_cpu_times(), wall=time.monotonic(), own=time.process_time())


def cores_busy(sample_s: float = 0.1) -> float:
    """How many cores other work keeps busy now: /proc/stat over at least ``sample_s``, this
    process's own CPU time taken out (it measures from ``start_sample`` when that ran, and
    sleeps only for what is missing), else the 1-minute load average."""
    import time

    if _START and time.monotonic() - _START["wall"] > STALE_SAMPLE_S:
        _START.clear()  # a reading from long ago says nothing about now
    start_sample()
    a, t0, own0 = _START["cpu"], _START["wall"], _START["own"]
    _START.clear()
    if a is not None:
        time.sleep(max(0.0, sample_s - (time.monotonic() - t0)))
        b = _cpu_times()
        own = (time.process_time() - own0) * (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
        if b is not None and b[1] > a[1]:
            return max(0.0, (os.cpu_count() or 1) * (b[0] - a[0] - own) / (b[1] - a[1]))
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0


def auto_threads() -> int:
    """BLAS threads for this machine as it is now: the cores other work leaves free.

    MKL's OpenMP threads wait for each other at the end of every matmul, so when another
    process holds a core, a thread parked there stalls the rest (docs/speed.md).  So finhrm
    counts the cores other work keeps busy at start-up and uses the ones left (at least 1).
    """
    n = os.cpu_count() or 1
    return max(1, min(n, int(n - cores_busy() + 0.5)))


def _threads_env() -> None:
    """Set the BLAS thread count from ``auto_threads`` unless the user set one."""
    if any(os.environ.get(v) for v in THREAD_VARS):
        return
    n = str(auto_threads())
    for v in THREAD_VARS:
        os.environ[v] = n
    _STATE["threads"] = int(n)


def _mkl_env() -> None:
    # MKL picks Intel OpenMP by default; keep it to the physical cores and quiet.
    os.environ.setdefault("MKL_THREADING_LAYER", "INTEL")
    os.environ.setdefault("KMP_WARNINGS", "0")
    # Intel OpenMP threads spin 200 ms after each parallel region by default; our matmuls
    # are small and frequent, and with a second process (mlx.launch, a test run) the
    # spinning threads starve each other (docs/speed.md).  Sleep at once.
    os.environ.setdefault("KMP_BLOCKTIME", "1")


NUMPY_OPENBLAS = ("libscipy_openblas*.so*", "libopenblas*.so*")  # in numpy's wheel, numpy.libs/
_USER_OPENBLAS_THREADS = os.environ.get("OPENBLAS_NUM_THREADS")  # before ``_threads_env`` sets it


def numpy_one_thread() -> int | None:
    """Run numpy's own OpenBLAS (the Linux wheel's) on one thread; the thread count it had,
    or None when there is none to set (macOS's Accelerate, a numpy built otherwise) or
    the user's ``$OPENBLAS_NUM_THREADS`` says how many.

    finhrm's numpy linear algebra (the linear partner's IRLS, the ridge fits) is on matrices
    of a few thousand rows by a few dozen columns, where threads cost more than they save:
    one IRLS fit of 2,000 x 31 took 0.03 s on one thread against 0.85-1.4 s on two while MLX
    or another process kept the cores busy.  MLX's BLAS (``ensure``) is a separate library
    and keeps its threads."""
    if _USER_OPENBLAS_THREADS:
        return None
    import numpy

    libs = Path(numpy.__file__).parent.parent / "numpy.libs"
    for pat in NUMPY_OPENBLAS:
        for path in sorted(glob.glob(str(libs / pat))):
            try:
                lib = ctypes.CDLL(path)  # already loaded by numpy: the same library
            except OSError:
                continue
            for prefix in ("scipy_openblas", "openblas"):
                get = getattr(lib, f"{prefix}_get_num_threads64_", None) or getattr(lib, f"{prefix}_get_num_threads", None)
                put = getattr(lib, f"{prefix}_set_num_threads64_", None) or getattr(lib, f"{prefix}_set_num_threads", None)
                if get is not None and put is not None:
                    before = int(get())
                    put(1)
                    return before
    return None


def ensure() -> dict:
    """Load the best CBLAS found, once.  Returns {"path", "kind"}; never raises."""
    if _STATE["done"]:
        return dict(_STATE)
    _STATE["done"] = True
    if sys.platform.startswith("linux"):
        numpy_one_thread()
    if not sys.platform.startswith("linux"):
        _STATE["kind"] = "native"
        return dict(_STATE)
    if "mlx.core" in sys.modules:  # too late to interpose; say so once
        _STATE["kind"] = "late"
        return dict(_STATE)
    choice = os.environ.get("FINHRM_BLAS", "").strip()
    if choice.lower() in ("none", "off", "0", "reference"):
        _STATE["kind"] = "reference"
        return dict(_STATE)
    cands = [(choice, "custom")] if choice else _candidates()
    for path, kind in cands:
        if not Path(path).exists():
            continue
        if kind == "mkl":
            _mkl_env()
        _threads_env()
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _STATE["path"], _STATE["kind"] = path, kind
        return dict(_STATE)
    _STATE["kind"] = "reference"
    from finhrm_cli.errors import FinhrmWarning

    warnings.warn(
        "no optimized BLAS found, so MLX runs matmuls with the slow reference BLAS "
        "(about 10x slower). Fix: `pip install mkl` in finhrm's environment, or "
        "`apt-get install libopenblas0-pthread`, or point FINHRM_BLAS at a libcblas .so.",
        FinhrmWarning,
        stacklevel=2,
    )
    return dict(_STATE)


def kernel_cache() -> str | None:
    """Point MLX's compiled-kernel cache at finhrm's cache folder (see the module notes).

    Returns the persistent folder used, or None when kernels go to a private temporary folder
    instead (the cache is off, or breaks the rule of ``finhrm_cli.cache``).  With no usable
    folder at all, compiling is turned off (``MLX_DISABLE_COMPILE``).  Never raises."""
    if "kernel_cache" in _STATE:
        return _STATE["kernel_cache"]
    _STATE["kernel_cache"] = None
    from finhrm_cli import cache

    try:
        folder, persistent = cache.kernel_folder()
    except Exception:  # noqa: BLE001 - a cache must never stop a command
        folder, persistent = cache.private_temp_folder(), False
    import tempfile

    tempfile.gettempdir()  # resolve and keep Python's temp folder before TMPDIR moves
    if folder is None:
        os.environ["MLX_DISABLE_COMPILE"] = "1"
        return None
    os.environ["TMPDIR"] = str(folder)
    _STATE["kernel_folder"] = str(folder)
    if persistent:
        _STATE["kernel_cache"] = str(folder)
    return _STATE["kernel_cache"]


def info() -> dict:
    return dict(_STATE)


def mlx_core():
    """``import mlx.core`` after loading the fast BLAS and pointing the kernel cache."""
    ensure()
    kernel_cache()
    import mlx.core as mx

    return mx
