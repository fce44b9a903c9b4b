"""Two gloo ranks with their chunks must give exactly what one process gives on the whole batch,
and GC must talk only through its two parameter-sized all-reduces."""

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gc_reference import bn_cnn

from trd.losses import gradient_collision_loss

BATCH = 8
TIGHT = dict(rtol=1e-9, atol=1e-12)
# (name, chunks per rank, normalized, execution)
SCENARIOS = [
    ("gc_1_chunk", 1, False, "batched"),
    ("ngc_1_chunk", 1, True, "batched"),
    ("gc_2_chunks", 2, False, "batched"),
    ("gc_2_chunks_per_chunk", 2, False, "per_chunk"),
    ("ngc_2_chunks_per_chunk", 2, True, "per_chunk"),
]
# The same, with the result reduction left to a gradient-averaging engine (reduce_gradient=False).
ENGINE_REDUCED = [("gc_engine_reduced", 1, False, "batched"), ("ngc_engine_reduced", 1, True, "batched")]


def full_batch():
    generator = torch.Generator().manual_seed(5)
    return torch.randn(BATCH, 2, 5, 5, generator=generator, dtype=torch.float64), torch.randint(3, (BATCH,), generator=generator)


def run_scenario(model, inputs, targets, chunks, normalized, reduce_gradient=True, execution="auto"):
    model.zero_grad(set_to_none=True)
    loss, stats = gradient_collision_loss(model, inputs, targets, chunks=chunks, normalized=normalized,
                                          return_stats=True, reduce_gradient=reduce_gradient, execution=execution)
    loss.backward()
    return {
        "loss": loss.detach(),
        "grads": [p.grad.clone() for p in model.parameters()],
        "stats": (stats.total_sq_norm, stats.sum_chunk_sq_norms, stats.mean_pair_cosine, stats.chunks),
    }


def count_collectives(log):
    """Wrap every collective that could move gradients, logging (name, element count)."""
    for name in ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast", "reduce_scatter", "all_to_all"):
        original = getattr(dist, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            first = args[0] if args else None
            size = sum(t.numel() for t in first) if isinstance(first, list) else getattr(first, "numel", lambda: 0)()
            log.append((_name, size))
            return _original(*args, **kwargs)

        setattr(dist, name, counting)


def worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = bn_cnn()
        inputs, targets = full_batch()
        local = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        log = []
        count_collectives(log)
        results = {}
        for scenarios, reduce_gradient in ((SCENARIOS, True), (ENGINE_REDUCED, False)):
            for name, chunks, normalized, execution in scenarios:
                log.clear()
                results[name] = run_scenario(model, inputs[local], targets[local], chunks, normalized,
                                             reduce_gradient, execution)
                results[name]["collectives"] = list(log)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("gc_distributed")
    mp.spawn(worker, args=(2, free_port(), str(out_dir)), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.parametrize("name, chunks, normalized, execution", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_two_ranks_equal_one_process_on_the_concatenated_batch(two_rank_results, name, chunks, normalized, execution):
    model = bn_cnn()
    single = run_scenario(copy.deepcopy(model), *full_batch(), chunks=2 * chunks, normalized=normalized)
    for rank_result in two_rank_results:
        got = rank_result[name]
        torch.testing.assert_close(got["loss"], single["loss"], **TIGHT)
        for g, want in zip(got["grads"], single["grads"]):
            torch.testing.assert_close(g, want, **TIGHT)
        total_sq, sum_sq, mean_cos, total_chunks = got["stats"]
        assert total_chunks == 2 * chunks
        torch.testing.assert_close(total_sq, single["stats"][0], **TIGHT)
        torch.testing.assert_close(sum_sq, single["stats"][1], **TIGHT)
        if normalized:
            torch.testing.assert_close(mean_cos, single["stats"][2], **TIGHT)


def test_gc_one_chunk_per_rank_reports_no_visible_pair_cosine(two_rank_results):
    assert all(torch.isnan(r["gc_1_chunk"]["stats"][2]) for r in two_rank_results)


@pytest.mark.parametrize("name", ["gc_1_chunk", "gc_2_chunks", "gc_2_chunks_per_chunk"])
def test_gc_uses_exactly_two_parameter_sized_all_reduces_and_no_gather(two_rank_results, name):
    parameters = sum(p.numel() for p in bn_cnn().parameters())
    for rank_result in two_rank_results:
        collectives = rank_result[name]["collectives"]
        assert [op for op, _ in collectives] == ["all_reduce", "all_reduce"]
        forward, backward = (size for _, size in collectives)
        assert forward == parameters + 5  # summed gradient + 5 packed scalars
        assert backward == parameters


def test_ngc_gathers_chunk_gradients_once_and_all_reduces_the_result_once(two_rank_results):
    parameters = sum(p.numel() for p in bn_cnn().parameters())
    for rank_result in two_rank_results:
        assert rank_result["ngc_1_chunk"]["collectives"] == [("all_gather", 2 * parameters), ("all_reduce", parameters)]


@pytest.mark.parametrize("name, chunks, normalized, execution", ENGINE_REDUCED, ids=[s[0] for s in ENGINE_REDUCED])
def test_result_left_to_an_averaging_engine_averages_to_the_exact_gradient(two_rank_results, name, chunks,
                                                                           normalized, execution):
    single = run_scenario(bn_cnn(), *full_batch(), chunks=2 * chunks, normalized=normalized)
    shares = [r[name]["grads"] for r in two_rank_results]
    for rank0, rank1, want in zip(*shares, single["grads"]):
        torch.testing.assert_close((rank0 + rank1) / 2, want, **TIGHT)  # what DeepSpeed/DDP's average gives
    assert any(not torch.allclose(a, b) for a, b in zip(*shares))  # the shares themselves differ per rank
    for rank_result in two_rank_results:
        torch.testing.assert_close(rank_result[name]["loss"], single["loss"], **TIGHT)
        # Only the forward's collective: the result's all-reduce is the engine's.
        assert [op for op, _ in rank_result[name]["collectives"]] == ["all_gather" if normalized else "all_reduce"]
