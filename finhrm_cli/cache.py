"""finhrm's cache folder, and the one rule for trusting it.

Two caches share one root (``FINHRM_CACHE``, else the platform's user cache folder, e.g.
``~/.cache/finhrm``): ``kernels/``, MLX's compiled CPU kernels, and ``forecasts/``, forecasts
already made (``finhrm_cli.forecast.memo``).  Both are trusted completely once used: MLX loads
the shared objects in ``kernels/`` into the process and puts that folder's path into a shell
command for the C++ compiler, and a forecast read from ``forecasts/`` is printed as the
model's.  So the cache is treated as ssh treats ``~/.ssh``.

**The rule** (``trusted_folder``), checked before anything is read from a cache folder:

1. ``FINHRM_CACHE`` must be an absolute path (``~`` is expanded); ``tmp``, ``none``, ``off``
   or ``0`` turn the persistent cache off.
2. The path holds only plain characters: letters, digits, space and ``. _ + , : @ % = ~ -``
   and ``/``; no ``$``, backquote, quote, backslash, ``;``, ``&``, ``|``, ``<``, ``>``,
   ``*``, ``?``, ``!`` or control characters (MLX hands it to ``/bin/sh``), each component
   at most 255 bytes and the whole at most ``MAX_PATH`` bytes.
3. It lies outside the runs home and every run folder.
4. Every ancestor that exists is owned by the user or by root, and is not writable by
   others (unless sticky, as ``/tmp``) nor by a group other than the user's own private
   group.
5. The cache folders themselves are created mode 0700, must be owned by the user and not
   writable by group or others.
6. Each file read from them is a regular file (not a symlink), owned by the user and not
   writable by group or others; kernels must also be whole ELF files (``check_kernels``).

A folder that breaks the rule is not used: one warning says why and how to fix it.  Kernels
then go to a private temporary folder (``private_temp_folder``: mode 0700, removed at exit),
forecasts are not cached, and the command runs as usual.  This module never raises.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
from pathlib import Path

from finhrm_cli.errors import FinhrmWarning

ENV = "FINHRM_CACHE"
OFF = ("tmp", "none", "off", "0")
MAX_PATH = 3000          # MLX appends mlx/VERSION/cpu/lib<up to 245 characters>.so
_PLAIN = re.compile(r"[\w .+,:@%=~/-]*", re.UNICODE)
_WARNED: set[str] = set()


def warn(message: str) -> None:
    """One warning per message and process (``FinhrmWarning``: the CLI prints it on one line)."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, FinhrmWarning, stacklevel=3)


def cache_root() -> Path | None:
    """The configured cache root, unchecked; None when ``FINHRM_CACHE`` turns caching off.
    A relative ``FINHRM_CACHE`` is returned as given (``trusted_folder`` refuses it)."""
    choice = os.environ.get(ENV, "").strip()
    if choice.lower() in OFF:
        return None
    try:
        if choice:
            return Path(choice).expanduser()
        import platformdirs

        return Path(platformdirs.user_cache_path("finhrm", appauthor=False))
    except (OSError, ValueError, RuntimeError):
        return None


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be handed to a shell or the file system as it is (rule 2), or None."""
    text = str(path)
    if not path.is_absolute():
        return "is not an absolute path"
    if not _PLAIN.fullmatch(text) or any(ord(c) < 32 or c == "\x7f" for c in text):
        bad = next(c for c in text if not _PLAIN.fullmatch(c) or ord(c) < 32 or c == "\x7f")
        return f"contains {bad!r}, which a shell command would interpret"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in path.parts):
        return "has a component longer than 255 bytes"
    if len(text.encode("utf-8", "surrogateescape")) > MAX_PATH:
        return f"is longer than {MAX_PATH} bytes"
    return None


def _private_group(st: os.stat_result) -> bool:
    """The folder's group is the user's own and has no other member."""
    if st.st_gid != os.getegid():
        return False
    try:
        import grp
        import pwd

        members = set(grp.getgrgid(st.st_gid).gr_mem)
        return members <= {pwd.getpwuid(os.geteuid()).pw_name}
    except (ImportError, KeyError, OSError):
        return False


def _ancestor_problem(path: Path) -> str | None:
    """Rule 4 for every existing ancestor of ``path``."""
    uid = os.geteuid()
    for d in path.parents:
        try:
            st = d.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot check {d} ({exc.strerror})"
        if st.st_uid not in (uid, 0):
            return f"lies under {d}, which belongs to another user"
        sticky = bool(st.st_mode & stat.S_ISVTX)
        if st.st_mode & stat.S_IWOTH and not sticky:
            return f"lies under {d}, which anyone may write to"
        if st.st_mode & stat.S_IWGRP and not sticky and not _private_group(st):
            return f"lies under {d}, which its group may write to"
    return None


def _owned_private(st: os.stat_result) -> str | None:
    if st.st_uid != os.geteuid():
        return "belongs to another user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "may be written by group or others"
    return None


def _make_private(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 (whatever the umask: ``mkdir`` modes are only ever narrowed by it)."""
    missing = []
    d = path
    while not d.exists():
        missing.append(d)
        if d == d.parent:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass


def _inside_runs(path: Path) -> str | None:
    """Rule 3: the runs home and run folders hold runs only."""
    from finhrm_cli import config as cfgmod
    from finhrm_cli.run.files import run_folder_of

    try:
        real = Path(os.path.realpath(path))
        home = Path(os.path.realpath(cfgmod.runs_dir()))
    except (OSError, ValueError):
        return None
    if real == home or home in real.parents or path == home:
        return f"lies inside the runs home {home}"
    run = run_folder_of(real)
    if run is not None:
        return f"lies inside the run folder {run}"
    return None


def trusted_folder(name: str) -> Path | None:
    """``<root>/<name>`` created 0700 when missing, if the root and it follow the rule (see
    the module notes); None when caching is off or the rule is broken (warned once)."""
    root = cache_root()
    if root is None:
        return None
    folder = root / name
    why = path_problem(folder) or _inside_runs(root) or _ancestor_problem(root)
    if why is None:
        try:
            _make_private(folder)
            for d in (root, folder):
                st = d.lstat()
                if not stat.S_ISDIR(st.st_mode):
                    why = f"has {d}, which is not a folder" if d != root else "is not a folder"
                    break
                problem = _owned_private(st)
                if problem:
                    why = f"has {d}, which {problem}" if d != root else problem
                    break
        except OSError as exc:
            why = f"cannot be created or checked ({exc.strerror or exc})"
    if why is None:
        return folder
    _refuse(root, why)
    return None


_FIXES = (  # (words in the reason, what to do about it)
    ("compiled kernel", "delete that file (MLX builds it again)"),
    ("runs home", f"point {ENV} outside the runs home"),
    ("run folder", f"point {ENV} outside the run"),
    ("may write", f"point {ENV} at a folder under your home"),
    ("another user", f"point {ENV} at a folder of your own"),
    ("group or others", "run `chmod -R go-w` on the folder named"),
)


def _refuse(root: Path, why: str) -> None:
    shown = str(root)
    if len(shown) > 120:
        shown = shown[:60] + "..." + shown[-40:]
    subject = f"{ENV} {shown}" if os.environ.get(ENV, "").strip() else f"the cache folder {shown}"
    fix = next((f for words, f in _FIXES if words in why),
               f"set {ENV} to an absolute path of plain characters (letters, digits, . _ - /)")
    warn(f"{subject} {why}, so it is not used (kernels compile in a private temporary folder, "
         f"forecasts are not cached); fix: {fix}.")


def open_trusted(path: Path):
    """Open a cache file for reading under rule 6: a binary file object, or None (missing,
    a symlink, not a regular file, another user's or writable by others)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or _owned_private(st):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")
    except OSError:
        os.close(fd)
        return None


# ---------------------------------------------------------------------------------------------
# compiled kernels


def _elf_whole(data: bytes) -> bool:
    """``data`` is an ELF file whose program and section headers, and every segment they
    name, lie within it: a compile killed half-way leaves a file that fails this (and that
    would crash the process with SIGBUS when loaded)."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return False
    end = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # 64-bit: p_offset at 8 and p_filesz at 32 of each program header
        word, (phoff, shoff), at = "Q", struct.unpack_from(end + "QQ", data, 32), 54
        fields = (8, 32)
    else:             # 32-bit: p_offset at 4 and p_filesz at 16
        word, (phoff, shoff), at = "I", struct.unpack_from(end + "II", data, 28), 42
        fields = (4, 16)
    phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, at)
    n = len(data)
    if phnum == 0 or phoff + phnum * phentsize > n or shoff + shnum * shentsize > n:
        return False
    for i in range(phnum):
        base = phoff + i * phentsize
        (offset,) = struct.unpack_from(end + word, data, base + fields[0])
        (filesz,) = struct.unpack_from(end + word, data, base + fields[1])
        if offset + filesz > n:
            return False
    return True


def mlx_version() -> str | None:
    """The installed MLX's version (from its package metadata: no import of mlx), or None."""
    try:
        from importlib.metadata import version

        return version("mlx")
    except Exception:  # noqa: BLE001 - not installed as a distribution, or metadata damaged
        return None


def kernel_folders(folder: Path) -> list[Path]:
    """The folders MLX keeps its CPU kernels in under ``folder`` (``mlx/VERSION/cpu``)."""
    ver = mlx_version()
    if ver and re.fullmatch(r"[\w.+-]+", ver):
        return [folder / "mlx" / ver / "cpu"]
    return sorted((folder / "mlx").glob("*/cpu"))


VERIFIED = ".finhrm-verified"  # in a kernel folder: {name: [size, mtime_ns]} of kernels found whole


def _verified(cpu: Path) -> dict:
    """The kernels already checked in ``cpu`` (a private file of finhrm's, rule 6); {} if none."""
    import json

    fh = open_trusted(cpu / VERIFIED)
    if fh is None:
        return {}
    try:
        with fh:
            seen = json.loads(fh.read(1 << 20).decode("utf-8"))
        return seen if isinstance(seen, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def _kernel_problem(cpu: Path, e: os.DirEntry, seen: dict) -> tuple[str | None, list | None]:
    """(why kernel ``e`` may not be loaded or None, its [size, mtime_ns] once found whole).
    Only a kernel not yet verified at this size and time is read."""
    st = e.stat(follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode) or _owned_private(st):
        return f"has {e.path}, which is not a private regular file of yours", None
    stamp = [st.st_size, st.st_mtime_ns]
    if seen.get(e.name) == stamp:
        return None, stamp
    fh = open_trusted(Path(e.path))
    if fh is None:
        return f"has {e.path}, which is not a private regular file of yours", None
    with fh:
        data = fh.read()
    stem = e.name[3:-3]
    named = len(stem) >= 229 or (stem.encode() + b"\0") in data  # long names are clipped
    if _elf_whole(data) and named:
        return None, stamp
    source = cpu / f"{stem}.cpp"
    if source.is_file() and not source.is_symlink():
        try:
            os.unlink(e.path)
            return None, None
        except OSError:
            pass
    return f"has {e.path}, a compiled kernel that is damaged or foreign (delete it)", None


def check_kernels(folder: Path) -> str | None:
    """Rule 6 for MLX's kernels under ``folder``: None when they may be loaded, else why not.

    A kernel that is cut short or not what its name says (no symbol of that name) is
    removed when MLX's source for it lies beside it (``NAME.cpp`` next to ``libNAME.so``,
    the pair MLX writes), so MLX rebuilds it; anything else wrong is reported.  Kernels found
    whole are recorded (``VERIFIED``, by size and modification time), so each is read once,
    not at every start."""
    import json

    from finhrm_cli.fsutil import atomic_write_bytes

    ver = mlx_version()
    for cpu in kernel_folders(folder):
        if ver and cpu.parent.name == ver:
            _make_private(cpu)
        try:
            entries = list(os.scandir(cpu))
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot list {cpu} ({exc.strerror})"
        for d in (cpu.parent, cpu):
            problem = _owned_private(d.lstat())
            if problem:
                return f"has {d}, which {problem}"
        seen, whole = _verified(cpu), {}
        for e in entries:
            if e.name.startswith("lib") and e.name.endswith(".so"):
                problem, stamp = _kernel_problem(cpu, e, seen)
                if problem:
                    return problem
                if stamp:
                    whole[e.name] = stamp
        if whole != seen:
            try:
                atomic_write_bytes(cpu / VERIFIED, json.dumps(whole).encode(), mode=0o600)
            except OSError:
                pass  # only costs reading the kernels again next time
    return None


def private_temp_folder() -> Path | None:
    """A new folder of the system temp folder's, mode 0700, removed when the process exits;
    None when no temp folder with a plain path can be had."""
    import atexit
    import shutil
    import tempfile

    for base in (tempfile.gettempdir(), "/tmp"):
        if path_problem(Path(base)) is not None:
            continue
        try:
            path = Path(tempfile.mkdtemp(prefix="finhrm-kernels-", dir=base))
        except OSError:
            continue
        atexit.register(shutil.rmtree, path, True)
        return path
    return None


def kernel_folder() -> tuple[Path | None, bool]:
    """Where MLX may compile and load kernels: (folder, persistent).  The trusted
    ``kernels/`` cache when it follows the rule, else a private temporary folder, else
    (None, False): compile nothing."""
    folder = trusted_folder("kernels")
    if folder is not None:
        problem = check_kernels(folder)
        if problem is None:
            return folder, True
        _refuse(folder, problem)
    private = private_temp_folder()
    if private is None:
        warn("no temporary folder with a plain path for MLX's compiled kernels, so nothing is compiled "
             "(slower); fix: set TMPDIR to a private folder with a plain path.")
    return private, False
