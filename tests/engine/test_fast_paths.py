"""The engine's CPU speed paths change no result: packed bf16 projections (oneDNN's, bit for bit; our kernel's, to
bf16 precision) and the thread-count tuner.

Speed itself is measured by bench/ (a test never asserts wall-clock time); here only exactness and the choices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine.cpu import Linear, ThreadTuner
from llmaas.engine.device import cpu_supports_bf16
from llmaas.engine.kernels import bf16_linear
from llmaas.engine.models.llama import Llama
from llmaas.engine.models.loader import load_model


@pytest.fixture(autouse=True)
def _keep_threads() -> Any:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tiny(model_dir: Path, dtype: torch.dtype) -> Llama:
    spec = ModelSpec(name="m", source=str(model_dir))
    loaded = load_model(spec, Settings(data_dir=model_dir / "data", auth=False))
    return Llama.from_hf(loaded.config, loaded.tensors, torch.device("cpu"), dtype)


def test_fp32_is_never_packed(tiny_model_dir: Path) -> None:
    model = tiny(tiny_model_dir, torch.float32)
    assert model.pack_weights() is False
    assert all(m.packed is None for m in model.modules() if isinstance(m, Linear))


@pytest.mark.skipif(not cpu_supports_bf16(), reason="bf16 is emulated (100x slower) on this CPU")
def test_onednn_packed_bf16_projections_are_bit_identical(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bf16_linear, "ENABLED", False)
    model = tiny(tiny_model_dir, torch.bfloat16)
    modules = (model.layers[0].attn.wqkv, model.layers[1].mlp.w_down, model.lm_head)
    weights = [m.weight.detach().clone() for m in modules]  # packing drops the unpacked copies
    if not model.pack_weights():
        pytest.skip("this torch build has no oneDNN packed linear")
    for m, w in zip(modules, weights):
        assert m.packed is not None
        for rows in (1, 5, 40):
            x = torch.randn(rows, m.in_features, dtype=torch.bfloat16)
            assert torch.equal(m(x), torch.nn.functional.linear(x, w, m.bias))
    assert model.layers[0].attn.wqkv.weight.numel() == 0  # one copy of the weights in memory, not two
    assert model.lm_head.weight is model.embed.weight  # the tied table stays: the embedding reads it


@pytest.mark.skipif(not bf16_linear.available(), reason="no AVX-512 BF16: oneDNN packs instead")
def test_bf16_kernel_projections_match_and_ignore_the_batch(tiny_model_dir: Path) -> None:
    model = tiny(tiny_model_dir, torch.bfloat16)
    modules = [m for m in model.modules() if isinstance(m, Linear)]
    weights = {m: (m.weight.detach().clone(), m.bias) for m in modules}
    assert model.pack_weights()
    on_kernel = [m for m in modules if m.panels is not None]
    assert on_kernel == [m for m in modules if bf16_linear.fits(weights[m][0])] and on_kernel
    for m in on_kernel:
        w, bias = weights[m]
        x = torch.randn(40, m.in_features, dtype=torch.bfloat16)
        y = m(x)
        ref = torch.nn.functional.linear(x.float(), w.float(), None if bias is None else bias.float())
        assert (y.float() - ref).abs().max() <= 1e-2 * ref.abs().max()  # bf16 rounding, not a wrong product
        for rows in (slice(0, 1), slice(3, 8), slice(7, 20)):  # each row alone or in any batch: the same bits
            assert torch.equal(m(x[rows]), y[rows])


def test_thread_tuner_fixed_by_setting_and_choices(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(tiny_model_dir, torch.float32)
    monkeypatch.setenv("LLMAAS_NUM_THREADS", "1")
    fixed = ThreadTuner(model, fixed=Settings().num_threads)  # the environment reaches the engine as a setting
    assert fixed.fixed and torch.get_num_threads() == 1
    fixed.maybe_retune()  # no probe: the count stays
    assert torch.get_num_threads() == 1
    monkeypatch.delenv("LLMAAS_NUM_THREADS")
    assert Settings().num_threads is None
    torch.set_num_threads(2)
    tuner = ThreadTuner(model, interval=3600.0)
    assert tuner.max_threads == 2 and not tuner.fixed
    tuner.maybe_retune()
    assert tuner.chosen in (1, 2) and torch.get_num_threads() == tuner.chosen
    assert tuner.retune(window=0.005) in (1, 2)  # probes 1 vs all threads again


def test_usable_cores_honours_affinity_and_cpu_quota(tmp_path: Path) -> None:
    import os

    from llmaas.engine.cpu import usable_cores

    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path) == affinity  # no cgroup files: the affinity mask alone
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == affinity  # no limit
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # a container limit of half a CPU: one thread
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert usable_cores(tmp_path) == affinity
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cores(v1) == affinity


def test_thread_probe_rule_keeps_all_threads_on_a_tie() -> None:
    from llmaas.engine.cpu import choose_threads

    assert choose_threads(0.30, 0.17, 2) == 2  # an idle host: all threads win
    assert choose_threads(0.31, 0.31, 2) == 2  # a tie (a neighbour's moment): all threads, not one
    assert choose_threads(0.30, 0.35, 2) == 2  # within 20%: still all
    assert choose_threads(0.70, 12.0, 2) == 1  # oversubscribed: every multi-threaded window is far slower


def test_thread_probe_comes_back_sooner_after_choosing_fewer_threads() -> None:
    from llmaas.engine.cpu import next_probe_delay

    assert next_probe_delay(2, 2, None, 20.0) == 20.0  # all threads: the full interval
    assert next_probe_delay(1, 2, None, 20.0) == 2.0  # fewer: soon, a neighbour's burst may be over
    assert next_probe_delay(1, 2, 2.0, 20.0) == 4.0  # still fewer: back off
    assert next_probe_delay(1, 2, 16.0, 20.0) == 20.0  # up to the interval
    assert next_probe_delay(2, 2, 16.0, 20.0) == 20.0


def test_thread_probe_waits_for_a_second_of_continuous_work(tiny_model_dir: Path) -> None:
    # Not in front of the first request after a quiet spell, nor during its arrival burst; then one window per
    # forward, so that no forward waits for the whole probe.
    model = tiny(tiny_model_dir, torch.float32)
    now = [100.0]
    torch.set_num_threads(2)
    tuner = ThreadTuner(model, clock=lambda: now[0])
    windows: list[int] = []
    tuner._time_per_call = lambda threads, window: windows.append(threads) or 1.0  # type: ignore[method-assign]
    for _ in range(4):  # 0.75 s of back-to-back forwards: no probe yet
        tuner.maybe_retune()
        now[0] += 0.25
    assert windows == []
    for k in range(7):  # a second of work: the probe, one window per forward, the forward on the current choice
        tuner.maybe_retune()
        assert len(windows) == k + 1 and torch.get_num_threads() == 2
    assert windows == [1, 2, 1, 2, 1, 2, 1]
    tuner.maybe_retune()  # done: no eighth window
    assert len(windows) == 7
    now[0] += 60.0  # a quiet minute, then work again: not at once
    tuner.maybe_retune()
    now[0] += 1.0  # a pause of a whole second ends the busy spell again
    tuner.maybe_retune()
    assert len(windows) == 7
    for _ in range(5):  # a second of work: a probe starts; a pause cuts it after two windows
        now[0] += 0.25
        tuner.maybe_retune()
    assert len(windows) == 9
    now[0] += 5.0
    tuner.maybe_retune()  # the first forward after the pause: no window, the cut probe is dropped
    assert len(windows) == 9 and tuner._windows is None
