"""Profile llmaas under the serving load with py-spy: where the server's Python time goes at N concurrent streams.

    pip install py-spy
    python bench/profile_llmaas.py                 # 32 streams, 30 s of samples
    python bench/profile_llmaas.py --streams 1 --seconds 20

Starts `llmaas serve --no-auth --no-worker`, drives it with the benchmark's streaming load, and meanwhile runs
`py-spy record` on the server process (all threads, `--gil` off, idle frames dropped). Writes the collapsed stacks
(`bench/results/profile-*.txt`, feed to flamegraph.pl or speedscope) and prints the functions with the most samples,
self and inclusive. It measures nothing about peers and is not a benchmark figure (py-spy slows the process a bit).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert import hf_folder  # noqa: E402
from load import make_workload, run_level  # noqa: E402
from peers import THREADS, ServerProcess, peers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def summarize(collapsed: Path, top: int = 25) -> str:
    self_ct: collections.Counter = collections.Counter()
    incl_ct: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        self_ct[frames[-1]] += n
        for f in set(frames):
            incl_ct[f] += n
    out = [f"{total} samples", f"\n-- top {top} by self samples --"]
    out += [f"{n / total:6.1%}  {f}" for f, n in self_ct.most_common(top)]
    out += [f"\n-- top {top} by inclusive samples --"]
    out += [f"{n / total:6.1%}  {f}" for f, n in incl_ct.most_common(top)]
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--native", action="store_true", help="py-spy --native (C/C++ frames too; slower)")
    a = p.parse_args(argv)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_folder()))
    work = make_workload(tokenizer, a.streams * 8)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"profile-llmaas-{a.streams}streams-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    eos = lambda m: {"ignore_eos": True, "stream_options": {"include_usage": True}}  # noqa: E731
    peer = peers(a.threads)["llmaas"]
    with ServerProcess(peer, RESULTS / "logs" / "llmaas-profile.log") as srv:
        # Warm up, then sample while the load runs (load keeps going a bit longer than the recording).
        asyncio.run(run_level(srv.base_url, "SmolLM2-135M-Instruct", work, 1, 1, eos, tokenizer, cap_s=120))
        cmd = [
            "py-spy",
            "record",
            "-p",
            str(srv.proc.pid),
            "-d",
            str(a.seconds),
            "-r",
            str(a.rate),
            "-f",
            "raw",
            "--nonblocking",
            "--subprocesses",  # the engine core runs in a child process of its own
            "-o",
            str(out),
        ] + (["--native"] if a.native else [])
        rec = threading.Thread(target=subprocess.run, args=(cmd,), kwargs={"capture_output": True})
        load_result = {}

        def drive():
            load_result["lvl"] = asyncio.run(
                run_level(
                    srv.base_url,
                    "SmolLM2-135M-Instruct",
                    work,
                    a.streams,
                    len(work.messages) - 1,
                    eos,
                    tokenizer,
                    issue_s=a.seconds + 10,
                    cap_s=a.seconds + 20,
                    offset=1,
                )
            )

        driver = threading.Thread(target=drive)
        driver.start()
        time.sleep(5)  # let the batch fill up before sampling
        rec.start()
        rec.join()
        driver.join()
    shutil.rmtree(peer.env["LLMAAS_DATA_DIR"], ignore_errors=True)
    lvl = load_result.get("lvl")
    if lvl:
        print(
            f"load during the profile: {a.streams} streams, {lvl.out_tok_s:.1f} out tok/s, TPOT p50 "
            f"{lvl.tpot_p50_ms or 0:.0f} ms, {lvl.completed} done, {lvl.cancelled} cancelled"
        )
    if not out.exists():
        raise SystemExit("py-spy wrote nothing (is it installed? does ptrace work here?)")
    print(summarize(out))
    print(f"\ncollapsed stacks: {out}")


if __name__ == "__main__":
    main()
