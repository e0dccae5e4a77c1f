"""Engine test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmaas.engine import kernels
from llmaas.engine.kernels import fused, int8_linear

_KERNEL_CACHES = (kernels.load, fused._function, int8_linear._function)  # paged_attention asks kernels.load each call


@pytest.fixture(params=["native", "x86-64-v3"])
def kernel_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The kernels built for this CPU, then for a plain AVX2 one (x86-64-v3): the AVX-512 and the portable code
    paths both run here, whichever CPU CI has (the second is skipped where the compiler or CPU lacks AVX2)."""
    target = request.param
    if target != "native":
        if "avx2" not in kernels._cpu_flags().split():
            pytest.skip("this CPU has no AVX2")
        flags = [f"-march={target}" if f == "-march=native" else f for f in kernels.FLAGS]
        monkeypatch.setattr(kernels, "FLAGS", flags)
        monkeypatch.setenv("LLMAAS_KERNEL_CACHE", str(tmp_path_factory.mktemp(f"kernels-{target}")))
    for cache in _KERNEL_CACHES:
        cache.cache_clear()
    yield target
    for cache in _KERNEL_CACHES:
        cache.cache_clear()
