"""Serving benchmark: llmaas against its peers, same machine, same model, same streaming chat load, one run.

    python bench/serving.py --peers all              # llmaas + llama-server + llama-cpp-python + transformers serve + naive
    python bench/serving.py --peers llama-server --levels 1,8,32

For each server in turn: install on demand (bench/.peers/), start on loopback, find how it suppresses EOS (probe),
then drive it at each concurrency level with the same requests (~128-token prompts, 64-128 output tokens). Prints
a table, the ratios llmaas / peer, each figure as a fraction of the machine's limits, and writes JSON to
bench/results/. The CPU here is shared, so the numbers are noisy: quote them with the command that made them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert import gguf_path, hf_folder  # noqa: E402
from limits import best_limits, count_params, format_limits, measure  # noqa: E402
from load import as_dict, make_workload, probe, run_level  # noqa: E402
from peers import THREADS, ServerProcess, peers, torch_dtype_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PEER_ORDER = ["vllm", "llama-server", "llmaas-int8", "llmaas-thread", "llama-cpp-python", "transformers-serve", "naive"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default="all", help=f"all | none | comma list of {','.join(PEER_ORDER)}")
    p.add_argument("--no-llmaas", action="store_true", help="skip llmaas (harness check against peers only)")
    p.add_argument("--levels", default="1,8,32,64", help="concurrency levels")
    p.add_argument("--rounds", type=int, default=2, help="requests per worker at each level (min 4 requests)")
    p.add_argument("--issue-s", type=float, default=60.0, help="stop issuing new requests after this many seconds")
    p.add_argument("--cap-s", type=float, default=120.0, help="cancel whatever still streams after this many seconds")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--out-min", type=int, default=64)
    p.add_argument("--out-max", type=int, default=128)
    p.add_argument("--threads", type=int, default=THREADS, help="CPU threads every server may use (default: all cores)")
    p.add_argument(
        "--sequential",
        dest="interleave",
        action="store_false",
        help="run servers one at a time (less memory) instead of all up, levels interleaved",
    )
    p.add_argument("--no-limits", action="store_true", help="skip measuring bandwidth/FLOP/s")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/serving-<time>.json)")
    return p.parse_args(argv)


def n_requests(c: int, args) -> int:
    return max(c * args.rounds, 4)


def offset(c: int, args) -> int:
    """Where level c's requests start in the workload: every level gets prompts no server has seen yet."""
    levels = [int(x) for x in args.levels.split(",")]
    return sum(n_requests(x, args) for x in levels[: levels.index(c)])


def start_server(peer, stack: contextlib.ExitStack, tokenizer) -> tuple[dict, dict | None]:
    """Install and start one server, then probe how it suppresses EOS. Returns (record, handle or None if skipped)."""
    rec: dict = {"name": peer.name, "describe": peer.describe, "levels": []}
    try:
        peer.install()
    except Exception as exc:  # a peer that cannot be installed is reported, not fatal
        rec["skipped"] = f"install failed: {exc}"
        print(f"[{peer.name}] SKIPPED: {rec['skipped']}", flush=True)
        return rec, None
    t0 = time.perf_counter()
    try:
        srv = stack.enter_context(ServerProcess(peer, RESULTS / "logs" / f"{peer.name}.log"))
        rec["startup_s"] = time.perf_counter() - t0
        rec["command"] = " ".join(peer.command(srv.port))
        model = peer.model() if callable(peer.model) else peer.model
        idx, details = asyncio.run(probe(srv.base_url, model, peer.strategies, tokenizer))
        rec["eos_probe"] = details
        if idx < 0 and all(d["completed"] == 0 for d in details.values()):
            raise RuntimeError(f"no request succeeded: {details}")
        rec["eos_strategy"] = details[idx]["example"] if idx >= 0 else "NONE WORKED (token counts may fall short)"
        print(f"[{peer.name}] up in {rec['startup_s']:.1f}s; EOS suppression: {rec['eos_strategy']}", flush=True)
        srv.take_level_peak()
        return rec, {"srv": srv, "model": model, "strategy": peer.strategies[max(idx, 0)]}
    except Exception as exc:
        rec["skipped"] = f"start failed: {exc}"[:2000]
        print(f"[{peer.name}] FAILED: {rec['skipped']}", flush=True)
        return rec, None


def run_one_level(rec: dict, h: dict, c: int, args, work, tokenizer) -> None:
    srv = h["srv"]
    if srv.proc.poll() is not None:
        rec["levels"].append({"concurrency": c, "died": True})
        return
    lvl = asyncio.run(
        run_level(
            srv.base_url,
            h["model"],
            work,
            c,
            n_requests(c, args),
            h["strategy"],
            tokenizer,
            issue_s=args.issue_s,
            cap_s=args.cap_s,
            offset=offset(c, args),
        )
    )
    rss, pss = srv.take_level_peak()
    lvl.peak_rss_mb = rss / 2**20
    rec["levels"].append({**as_dict(lvl), "peak_pss_mb": pss / 2**20})
    rec["peak_rss_mb"], rec["peak_pss_mb"] = srv.peak_rss / 2**20, srv.peak_pss / 2**20
    rec["serving_peak_rss_mb"] = max(L.get("peak_rss_mb") or 0 for L in rec["levels"])
    rec["serving_peak_pss_mb"] = max(L.get("peak_pss_mb") or 0 for L in rec["levels"])
    print(f"[{rec['name']:>18}] {row(lvl.__dict__)}", flush=True)
    if lvl.errors:
        print(f"[{rec['name']}] {lvl.errors} errors; first: {lvl.first_error}", flush=True)
    if lvl.cancelled:  # it may still be generating for the cancelled streams: let it finish or restart it
        state = srv.drain()
        rec["levels"][-1]["after_cancel"] = state
        if state != "idle":
            print(f"[{rec['name']}] still busy after cancelling {lvl.cancelled} streams: {state}", flush=True)


def run_all(order: list[str], table: dict, args, work, tokenizer, levels: list[int], save) -> list[dict]:
    """Sequential: one server at a time. Interleaved: all up at once, each level run on every server in turn,
    so that the others' changing CPU load on this shared machine hits every server alike."""
    records = []
    if not args.interleave:
        for name in order:
            with contextlib.ExitStack() as stack:
                rec, h = start_server(table[name], stack, tokenizer)
                records.append(rec)
                for c in levels if h else []:
                    run_one_level(rec, h, c, args, work, tokenizer)
                    save(records)
        return records
    with contextlib.ExitStack() as stack:
        handles = {}
        for name in order:
            rec, h = start_server(table[name], stack, tokenizer)
            records.append(rec)
            if h:
                handles[name] = (rec, h)
        print(f"all servers up; levels {levels} interleaved over {list(handles)}", flush=True)
        print(" " * 21 + HEADER, flush=True)
        for k, c in enumerate(levels):
            items = list(handles.items())
            for name, (rec, h) in items[::-1] if k % 2 else items:  # alternate who goes first
                settle(name, handles)
                run_one_level(rec, h, c, args, work, tokenizer)
                save(records)
    return records


def settle(name: str, handles: dict) -> None:
    """Before a server's level, wait until the others are idle: a server can stay busy after its own level ends
    (vLLM did for 1-1.5 s after each of its levels here), and that would land on whoever runs next."""
    for other, (rec, h) in handles.items():
        if other == name or h["srv"].proc.poll() is not None:
            continue
        waited, load = h["srv"].wait_quiet()
        rec.setdefault("settle_s", []).append(round(waited, 1))
        if load >= 0.1:
            print(f"[{other}] still using {load:.0%} of a core after {waited:.0f} s of waiting", flush=True)
        elif waited >= 1.0:
            print(f"[{other}] busy for {waited:.1f} s more before {name}'s level", flush=True)


# --- reporting --------------------------------------------------------------------------------------------

HEADER = (
    f"{'conc':>4} {'out tok/s':>9} {'req/s':>6} {'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} "
    f"{'TPOT p99':>9} {'RSS MB':>7} {'done':>9} {'exact':>6}"
)


def _ms(v, censored=0) -> str:
    return "-" if v is None else (">" if censored else "") + f"{v:.0f}ms"


def row(L: dict) -> str:
    return (
        f"{L['concurrency']:>4} {L['out_tok_s']:>9.1f} {L['req_s']:>6.2f} "
        f"{_ms(L['ttft_p50_ms'], L['ttft_censored']):>9} {_ms(L['ttft_p99_ms'], L['ttft_censored']):>9} "
        f"{_ms(L['tpot_p50_ms']):>9} {_ms(L['tpot_p99_ms']):>9} {L['peak_rss_mb'] or 0:>7.0f} "
        f"{L['completed']:>4}/{L['requests']:<4} {L['tokens_exact']:>6}"
    )


def _level(rec: dict, c: int) -> dict | None:
    return next((L for L in rec.get("levels", []) if L["concurrency"] == c and not L.get("died")), None)


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(result: dict) -> str:
    out = []
    if result.get("limits"):
        out.append(format_limits(result["limits"]))
    for rec in result["servers"]:
        out.append(f"\n== {rec['name']}: {rec['describe']}")
        if rec.get("skipped"):
            out.append(f"   skipped: {rec['skipped']}")
            continue
        out.append(f"   EOS suppression: {rec.get('eos_strategy')}")
        out.append(
            f"   peak memory of the process tree, over its life (load included) / while serving: RSS "
            f"{rec.get('peak_rss_mb', 0):.0f} / {rec.get('serving_peak_rss_mb', 0):.0f} MB, PSS "
            f"{rec.get('peak_pss_mb', 0):.0f} / {rec.get('serving_peak_pss_mb', 0):.0f} MB"
        )
        out.append("   " + HEADER)
        out.extend(
            "   " + (row(L) if not L.get("died") else f"{L['concurrency']:>4} server died") for L in rec["levels"]
        )
    by = {r["name"]: r for r in result["servers"] if not r.get("skipped")}
    levels = result["levels"]
    me = by.get("llmaas")
    if me:
        out.append("\nRatios llmaas / peer (throughput: >1 = llmaas better; latency & RSS: <1 = llmaas better)")
        for name, rec in by.items():
            if name == "llmaas":
                continue
            cells = []
            for c in levels:
                a, b = _level(me, c), _level(rec, c)
                if a and b:
                    cells.append(
                        f"c={c}: tok/s {_ratio(a['out_tok_s'], b['out_tok_s'])} "
                        f"TTFT50 {_ratio(a['ttft_p50_ms'], b['ttft_p50_ms'])} "
                        f"TPOT50 {_ratio(a['tpot_p50_ms'], b['tpot_p50_ms'])}"
                    )
            cells.append(
                f"peak RSS {_ratio(me.get('peak_rss_mb'), rec.get('peak_rss_mb'))}, "
                f"PSS {_ratio(me.get('peak_pss_mb'), rec.get('peak_pss_mb'))}"
            )
            out.append(f"  vs {name}: " + " | ".join(cells))
    lim = result.get("limits")
    if lim:
        dt = "bf16" if torch_dtype_name() == "bfloat16" else "fp32"  # what the torch servers compute in here
        b1 = lim["bounds"][dt]["batch1_tok_s"]
        big = lim["bounds"][dt]["large_batch_tok_s"]
        out.append(
            f"\nFraction of the machine's limits ({dt} batch-1 bound {b1:.0f} tok/s, "
            f"{dt} large-batch bound {big:.0f} tok/s)"
        )
        for name, rec in by.items():
            cells = []
            for L in (L for L in rec["levels"] if not L.get("died")):
                bound = b1 if L["concurrency"] == 1 else big
                cells.append(f"c={L['concurrency']}: {L['out_tok_s'] / bound:.0%}")
            out.append(f"  {name:20s} " + "  ".join(cells))
    if me:
        out.append("\nTargets")
        out.extend("  " + t for t in targets(result, by, me))
    return "\n".join(out)


def targets(result: dict, by: dict, me: dict) -> list[str]:
    """The engine-speed issue's targets, each from this run alone."""
    lines = []

    def check(label: str, ok: bool, value: str) -> None:
        lines.append(f"{label}: {value} -> {'PASS' if ok else 'FAIL'}")

    vllm, ls = by.get("vllm"), by.get("llama-server")
    for c in (32, 64):
        a, b = _level(me, c), vllm and _level(vllm, c)
        if a and b:
            r = a["out_tok_s"] / b["out_tok_s"]
            check(f"out tok/s at {c} streams >= 1.5x vLLM CPU", r >= 1.5, f"{r:.2f}x")
    m1 = _level(me, 1)
    for name, peer in (("vLLM CPU", vllm), ("llama-server", ls)):
        p1 = peer and _level(peer, 1)
        if m1 and p1 and p1["tpot_p50_ms"]:
            check(
                f"TPOT p50 at 1 stream <= {name}'s",
                m1["tpot_p50_ms"] <= p1["tpot_p50_ms"],
                f"{m1['tpot_p50_ms']:.1f} vs {p1['tpot_p50_ms']:.1f} ms",
            )
    q1, l1 = (by.get("llmaas-int8") and _level(by["llmaas-int8"], 1)), ls and _level(ls, 1)
    if q1 and l1 and q1["tpot_p50_ms"] and l1["tpot_p50_ms"]:
        check(
            "TPOT p50 at 1 stream, int8 weights <= llama-server's",
            q1["tpot_p50_ms"] <= l1["tpot_p50_ms"],
            f"{q1['tpot_p50_ms']:.1f} vs {l1['tpot_p50_ms']:.1f} ms",
        )
    p1 = vllm and _level(vllm, 1)
    if m1 and p1:
        check(
            "TTFT p50 at 1 stream <= vLLM CPU's",
            m1["ttft_p50_ms"] <= p1["ttft_p50_ms"],
            f"{m1['ttft_p50_ms']:.0f} vs {p1['ttft_p50_ms']:.0f} ms",
        )
    lim = result.get("limits")
    if m1 and lim and m1["tpot_p50_ms"]:
        dtype = "bf16" if torch_dtype_name() == "bfloat16" else "fp32"
        frac = (1e3 / m1["tpot_p50_ms"]) / lim["bounds"][dtype]["batch1_tok_s"]
        lines.append(f"single-stream decode through HTTP: {frac:.0%} of the {dtype} batch-1 bound")
    if me.get("peak_rss_mb"):  # both: RSS counts the libraries both llmaas processes map twice, PSS once
        check("peak RSS <= 2 GB", me["peak_rss_mb"] <= 2048, f"{me['peak_rss_mb']:.0f} MB")
        check("peak PSS <= 2 GB", me.get("peak_pss_mb", 0) <= 2048, f"{me.get('peak_pss_mb', 0):.0f} MB")
    return lines


def main(argv=None) -> None:
    args = parse_args(argv)
    table = peers(args.threads)
    names = [] if args.peers == "none" else PEER_ORDER if args.peers == "all" else args.peers.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; choose from {PEER_ORDER}")
    order = ([] if args.no_llmaas else ["llmaas"]) + names
    levels = [int(x) for x in args.levels.split(",")]
    from transformers import AutoTokenizer

    hf = hf_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(hf))
    work = make_workload(
        tokenizer, sum(n_requests(c, args) for c in levels), args.prompt_tokens, args.out_min, args.out_max
    )
    result = {
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "levels": levels,
        "args": {k: str(v) for k, v in vars(args).items()},
        "workload": {
            "requests": len(work.messages),
            "prompt_tokens_mean": sum(work.prompt_tokens) / len(work.prompt_tokens),
            "max_tokens_mean": sum(work.max_tokens) / len(work.max_tokens),
        },
        "note": "shared 2-core CPU (other engineers' builds/tests running): numbers are noisy",
        "servers": [],
    }
    print(f"workload: {result['workload']}", flush=True)
    if not args.no_limits:
        import torch

        torch.set_num_threads(args.threads)
        result["limits"] = measure(count_params(hf), gguf_path().stat().st_size)
        print(format_limits(result["limits"]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"serving-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def save(records):  # partial results survive an interrupted run
        result["servers"] = records
        out.write_text(json.dumps(result, indent=2))

    try:
        result["servers"] = run_all(order, table, args, work, tokenizer, levels, save)
    finally:
        shutil.rmtree(table["llmaas"].env["LLMAAS_DATA_DIR"], ignore_errors=True)
    if not args.no_limits:  # again at the end: the best of both is nearer the machine's true limit
        again = measure(count_params(hf), gguf_path().stat().st_size)
        result["limits_runs"] = [result["limits"], again]
        result["limits"] = best_limits(result["limits"], again)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.write_text(json.dumps(result, indent=2))
    print("\n" + report(result))
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
