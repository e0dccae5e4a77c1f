"""Scheduler without a model: hand-made sampled tokens fed to update_from_output (token budget, chunked prefill,
continuous batching, preemption, stop conditions, prefix reuse)."""

from __future__ import annotations

from llmaas.engine.kv_cache import KVCacheManager
from llmaas.engine.scheduler import Request, Scheduler, SchedulerOutput
from llmaas.engine.types import BATCH, RequestStatus, SamplingParams

EOS = 2


def make(
    num_blocks: int = 64, block_size: int = 4, budget: int = 16, max_num_seqs: int = 8, max_len: int = 256
) -> Scheduler:
    kv = KVCacheManager(num_blocks, block_size)
    return Scheduler(
        kv, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=max_len, eos_token_ids=[EOS]
    )


def req(rid: str, n_prompt: int, max_tokens: int = 4, first: int = 10, **kw: object) -> Request:
    return Request(rid, list(range(first, first + n_prompt)), SamplingParams(max_tokens=max_tokens, **kw))  # type: ignore[arg-type]


def step(s: Scheduler, token: int = 7) -> SchedulerOutput:
    out = s.schedule()
    s.update_from_output(out, {q.request.request_id: token for q in out.seqs if q.sample})
    return out


def test_chunked_prefill_under_budget_then_decode() -> None:
    s = make(budget=16)
    s.add_request(req("a", 40, max_tokens=3))
    chunks = [[(q.request.request_id, q.start, q.num_new, q.sample) for q in step(s).seqs] for _ in range(3)]
    assert chunks == [[("a", 0, 16, False)], [("a", 16, 16, False)], [("a", 32, 8, True)]]
    a = s.running[0]
    assert a.output_token_ids == [7] and a.num_computed_tokens == 40
    assert [(q.start, q.num_new, q.sample) for q in step(s).seqs] == [(40, 1, True)]
    step(s)
    assert a.status == RequestStatus.FINISHED_LENGTH and not s.has_work()
    assert s.kv.num_used == 0


def test_new_requests_join_running_batch_and_decodes_go_first() -> None:
    s = make(budget=10)
    s.add_request(req("a", 5, max_tokens=10))
    step(s)  # a: prefill 5 tokens, samples
    s.add_request(req("b", 30, max_tokens=10, first=50))
    out = step(s)
    # a decodes (1 token) and b's first chunk takes the rest of the budget in the same step
    assert [(q.request.request_id, q.num_new) for q in out.seqs] == [("a", 1), ("b", 9)]
    out = step(s)
    assert [(q.request.request_id, q.num_new) for q in out.seqs] == [("a", 1), ("b", 9)]


def test_finished_request_leaves_at_once_and_frees_blocks() -> None:
    s = make()
    s.add_request(req("a", 4, max_tokens=10))
    s.add_request(req("b", 4, max_tokens=10, first=30))
    step(s)
    out = s.schedule()
    s.update_from_output(out, {"a": EOS, "b": 5})
    assert [r.request_id for r in s.running] == ["b"]
    assert s.kv.block_ids("a") == []
    assert [q.request.request_id for q in s.schedule().seqs] == ["b"]


def test_ignore_eos_and_stop_token_ids() -> None:
    s = make()
    a, b = req("a", 4, max_tokens=3, ignore_eos=True), req("b", 4, max_tokens=3, first=30)
    c = req("c", 4, max_tokens=3, first=60, stop_token_ids=[9], ignore_eos=True)
    for r in (a, b, c):
        s.add_request(r)
    step(s, token=EOS)
    assert (a.status, b.status, c.status) == (
        RequestStatus.RUNNING,
        RequestStatus.FINISHED_STOPPED,
        RequestStatus.RUNNING,
    )
    step(s, token=9)
    assert (a.status, c.status) == (RequestStatus.RUNNING, RequestStatus.FINISHED_STOPPED)


def test_max_model_len_finishes_with_length() -> None:
    s = make(max_len=6)
    s.add_request(req("a", 4, max_tokens=100))
    step(s)
    step(s)
    assert s.requests == {} and not s.running


def test_max_num_seqs_limits_the_batch() -> None:
    s = make(max_num_seqs=2, budget=100)
    for i in range(3):
        s.add_request(req(f"r{i}", 3, first=10 * i + 10))
    assert len(s.schedule().seqs) == 2 and len(s.waiting) == 1


def test_full_cache_preempts_youngest_and_recomputes() -> None:
    # 4 blocks of 4 tokens: two requests of 7 prompt tokens fit (2 blocks each) until they both grow past 8
    s = make(num_blocks=4, block_size=4, budget=64)
    old, young = req("old", 7, max_tokens=6), req("young", 7, max_tokens=6, first=40)
    s.add_request(old)
    s.add_request(young)
    step(s)
    step(s)  # each now 8 tokens + 1 sampled = 9 known: the next step needs a third block each
    out = step(s)
    assert [r.request_id for r in out.preempted] == ["young"]
    assert young.status == RequestStatus.PREEMPTED and young.num_computed_tokens == 0
    assert young.output_token_ids == [7, 7]  # kept; recomputed later as part of its tokens
    while old.status == RequestStatus.RUNNING:
        step(s)
    # old finished: young comes back, recomputing prompt + outputs in one chunk (its first block survived in
    # the prefix cache: freed tail-first, evicted LRU), then continues
    out = step(s)
    assert [(q.request.request_id, q.start, q.num_new, q.sample) for q in out.seqs] == [("young", 4, 5, True)]
    while s.has_work():
        step(s)
    assert len(young.output_token_ids) == 6 and s.kv.num_used == 0


def test_prefix_cache_hit_skips_computed_tokens_and_is_counted() -> None:
    s = make(block_size=4, budget=64)
    s.add_request(req("a", 10, max_tokens=1))
    step(s)
    s.add_request(req("b", 10, max_tokens=1))
    out = s.schedule()
    assert [(q.start, q.num_new) for q in out.seqs] == [(8, 2)]
    assert s.requests["b"].num_cached_tokens == 8
    assert (s.kv.stats.queries, s.kv.stats.hits) == (20, 8)


def test_abort_waiting_and_running() -> None:
    s = make()
    s.add_request(req("a", 4))
    s.add_request(req("b", 4, first=30))
    step(s)
    s.add_request(req("c", 4, first=60))
    s.finish_request(s.requests["a"], RequestStatus.FINISHED_ABORTED)
    s.finish_request(s.requests["c"], RequestStatus.FINISHED_ABORTED)
    assert [r.request_id for r in s.running] == ["b"] and not s.waiting
    s.finish_request(s.requests["b"], RequestStatus.FINISHED_ABORTED)
    assert s.kv.num_used == 0


def test_siblings_wait_one_step_to_share_a_prompt() -> None:
    """n>1: identical prompts submitted together are computed once; the siblings join a step later, as cache hits."""
    s = make(block_size=4, budget=64)
    for i in range(3):
        s.add_request(req(f"n{i}", 13, max_tokens=2))
    s.add_request(req("other", 6, max_tokens=2, first=100))
    out = step(s)
    assert [(q.request.request_id, q.num_new) for q in out.seqs] == [("n0", 13), ("other", 6)]
    out = step(s)
    assert [(q.request.request_id, q.start, q.num_new) for q in out.seqs] == [
        ("n0", 13, 1),
        ("other", 6, 1),
        ("n1", 12, 1),
        ("n2", 12, 1),
    ]
    assert s.requests["n1"].num_cached_tokens == 12


# --- priorities: batch sequences run only in capacity interactive requests leave free -----------------------


def batch(rid: str, n_prompt: int, max_tokens: int = 4, first: int = 10) -> Request:
    r = req(rid, n_prompt, max_tokens, first)
    r.priority = BATCH
    return r


def test_interactive_requests_take_the_budget_before_batch_ones() -> None:
    s = make(budget=10)
    s.add_request(batch("b", 8, max_tokens=10, first=60))  # arrived first
    s.add_request(req("i", 8, max_tokens=10))
    out = step(s)  # i's prompt takes the step alone: the batch line must not delay its first token
    assert [(q.request.request_id, q.num_new) for q in out.seqs] == [("i", 8)]
    out = step(s)  # i decodes first; b's prefill gets what is left
    assert [(q.request.request_id, q.num_new) for q in out.seqs] == [("i", 1), ("b", 8)]


def test_batch_waits_behind_an_interactive_request_that_does_not_fit() -> None:
    s = make(max_num_seqs=1)
    s.add_request(req("i1", 4, max_tokens=10))
    step(s)
    s.add_request(req("i2", 4, max_tokens=10, first=30))
    s.add_request(batch("b", 4, first=60))
    out = step(s)  # no seat: neither i2 nor the batch line overtakes
    assert [q.request.request_id for q in out.seqs] == ["i1"]


def test_interactive_request_evicts_running_batch_for_a_seat() -> None:
    s = make(max_num_seqs=2)
    s.add_request(batch("b1", 4, max_tokens=10, first=60))
    s.add_request(batch("b2", 4, max_tokens=10, first=80))
    step(s)
    s.add_request(req("i", 4, max_tokens=10))
    out = s.schedule()
    assert [r.request_id for r in out.preempted] == ["b2"]  # the youngest batch sequence
    assert {q.request.request_id for q in out.seqs} == {"i"}  # b1 keeps its seat and pauses while i's prompt runs
    assert {r.request_id for r in s.running} == {"b1", "i"}
    assert s.waiting[0].request_id == "b2" and s.waiting[0].status == RequestStatus.PREEMPTED


def test_full_cache_preempts_batch_before_a_younger_interactive_request() -> None:
    s = make(num_blocks=6, block_size=4, budget=64)
    s.add_request(req("i1", 7, max_tokens=20))
    s.add_request(batch("b", 7, max_tokens=20, first=40))
    step(s)  # i1's prompt alone
    step(s)  # i1 decodes, b's prompt: each holds 2 blocks; 2 free
    s.add_request(req("i2", 7, max_tokens=20, first=80))
    for _ in range(9):  # i2 needs 2 blocks and the decodes need more: the first sequence to go is the batch one
        out = step(s)
        if out.preempted:
            break
    assert [r.request_id for r in out.preempted] == ["b"]
    assert {r.request_id for r in s.running} == {"i1", "i2"}


def test_priority_survives_the_engine_request() -> None:
    import pickle

    from llmaas.engine.types import EngineRequest

    er = EngineRequest("x", [1, 2], SamplingParams(max_tokens=1), priority=BATCH)
    crossed = pickle.loads(pickle.dumps(er))  # what EngineProcess sends down its pipe
    assert Request.from_engine_request(crossed).priority == BATCH
