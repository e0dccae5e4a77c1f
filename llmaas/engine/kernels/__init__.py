"""Hand-written CPU kernels, compiled on first use with the system C++ compiler and cached.

Each kernel is plain C++ behind a C ABI, called through ctypes: building one takes a second (no torch headers), needs
only `g++` (or `$CXX`), and uses `-march=native`, so the cache key includes the CPU's flags. Where no compiler is
found or the build fails, `load()` returns None and the engine keeps its pure-torch path (logged once).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# -fno-trapping-math: lets the clamps and float->int steps of fast_exp vectorize (GCC keeps them scalar otherwise);
# it changes no result of ordinary arithmetic. -mprefer-vector-width=512: GCC's default tuning keeps loops at 256
# bits even where AVX-512 runs them at full width; no effect without AVX-512.
FLAGS = [
    "-O3",
    "-march=native",
    "-mprefer-vector-width=512",
    "-fno-trapping-math",
    "-fopenmp",
    "-shared",
    "-fPIC",
    "-std=c++17",
]


def cache_dir() -> Path:
    return Path(os.environ.get("LLMAAS_KERNEL_CACHE", "~/.cache/llmaas/kernels")).expanduser()


def _cpu_flags() -> str:
    try:
        return next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return ""


@cache
def load(name: str, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """The compiled library for kernels/<name>.cpp (with the headers beside it), built if not cached; None if it
    cannot be built here."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        log.warning("no C++ compiler found: the %s kernel is off (the slower torch path runs)", name)
        return None
    flags = [*FLAGS, *extra_flags]
    source = b"".join(p.read_bytes() for p in [HERE / f"{name}.cpp", *sorted(HERE.glob("*.h"))])
    key = hashlib.sha256(source + " ".join([compiler, *flags, _cpu_flags()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}-{key}.so"
    if not target.exists() and not _build(name, compiler, flags, target):
        return None
    try:
        return ctypes.CDLL(str(target))
    except OSError as e:
        log.warning("loading the %s kernel failed (the slower torch path runs): %s", name, e)
        return None


def _build(name: str, compiler: str, flags: list[str], target: Path) -> bool:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            result = subprocess.run(
                [compiler, *flags, str(HERE / f"{name}.cpp"), "-o", str(built)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if result.returncode != 0:
                raise OSError(result.stderr[-2000:])
            os.replace(built, target)  # atomic: concurrent builders never load a half-written file
    except (OSError, subprocess.TimeoutExpired) as e:  # no such compiler, a read-only cache, a failed build
        log.warning("building the %s kernel failed (the slower torch path runs): %s", name, e)
        return False
    return True
