"""Sparse embedding gradients averaged by all-gather (``sparkrec.train.sparse_grads``), the path
``train.backend=torch`` takes on gloo and NCCL alike, against gloo DDP's own sparse all-reduce.

Two real processes on gloo. Each trains the same NeuMF (sparse embeddings under SparseAdam, a
dense tower under Adam) on its own batches, once wrapped as sparkrec wraps it and once under plain
DDP; after N steps the weights must be the same.
"""
import os

import pytest
import torch
import torch.distributed as tdist

from processes import free_port, spawn
from sparkrec.models.ncf import NCF, NCFConfig

pytestmark = pytest.mark.distributed
STEPS, USERS, ITEMS = 6, 50, 40


def batches(rank: int):
    """Per-rank batches: repeated ids inside a batch, different sizes per rank, and one step where
    rank 1 has no rows at all (a shard that ran dry)."""
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for step in range(STEPS):
        n = 0 if (rank == 1 and step == 2) else 16 + 8 * rank
        out.append((torch.randint(USERS, (n,), generator=g), torch.randint(ITEMS, (n,), generator=g),
                    torch.rand(n, generator=g) * 4 + 1))
    return out


def make_model(use_bias=False):
    torch.manual_seed(0)
    return NCF(NCFConfig(kind="neumf", num_users=USERS, num_items=ITEMS, factors=4, mlp_layers=(8, 4),
                         dropout=0.0, implicit=False, rating_min=1.0, rating_max=5.0, use_bias=use_bias,
                         dense_items=False))


def train_steps(trainee, model, optimizers, rank, world):
    for users, items, labels in batches(rank):
        for opt in optimizers:
            opt.zero_grad()
        loss = (model.to_score(trainee(users, items)) - labels).pow(2).sum() * world / 40
        loss.backward()
        for opt in optimizers:
            opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from sparkrec.train import distributed as dist
    from sparkrec.train.sparse_grads import SparseExchangeOptimizer

    dist.init("torch", "cpu", 60)

    # sparkrec's path: DDP for the dense layers, all-gather for the sparse embeddings
    def exchanged(use_bias):
        model = make_model(use_bias)
        trainee = dist.wrap_model(model)
        opts = [torch.optim.SparseAdam(_sparse(model), lr=0.05), torch.optim.Adam(_dense(model), lr=0.05)]
        opts = [dist.wrap_optimizer(o, model) for o in opts]
        assert isinstance(opts[0], SparseExchangeOptimizer) and not isinstance(opts[1], SparseExchangeOptimizer)
        return train_steps(trainee, model, opts, rank, world)

    ours, ours_with_bias = exchanged(False), exchanged(True)

    # the reference: plain DDP, which all-reduces the sparse gradients itself (gloo only)
    model = make_model()
    trainee = torch.nn.parallel.DistributedDataParallel(model)
    opts = [torch.optim.SparseAdam(_sparse(model), lr=0.05), torch.optim.Adam(_dense(model), lr=0.05)]
    reference = train_steps(trainee, model, opts, rank, world)

    torch.save({"ours": ours, "ours_with_bias": ours_with_bias, "reference": reference,
                "start": make_model().state_dict()},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.shutdown()


def _sparse(model):
    from sparkrec.train.optim import split_parameters

    return split_parameters(model)[0]


def _dense(model):
    from sparkrec.train.optim import split_parameters

    return split_parameters(model)[1]


@pytest.mark.timeout(180)
def test_all_gather_exchange_equals_gloo_ddp_sparse_allreduce(tmp_path):
    spawn(worker, (2, free_port(), str(tmp_path)))
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name, start in results[0]["start"].items():
        reference = results[0]["reference"][name]
        assert not torch.equal(reference, start), f"{name} did not train"  # the comparison means something
        for r in (0, 1):
            # same weights on both ranks, and the same as gloo DDP's own sparse all-reduce
            torch.testing.assert_close(results[r]["ours"][name], reference, rtol=0, atol=1e-6, msg=name)
            assert torch.equal(results[r]["reference"][name], reference)


def one_process_steps(use_bias):
    """Both ranks' batches in one process: the sum of their losses is what averaging the two
    ranks' gradients (each loss scaled by the world size) optimises."""
    model = make_model(use_bias)
    opts = [torch.optim.SparseAdam(_sparse(model), lr=0.05), torch.optim.Adam(_dense(model), lr=0.05)]
    for step_batches in zip(batches(0), batches(1)):
        for opt in opts:
            opt.zero_grad()
        sum((model.to_score(model(u, i)) - y).pow(2).sum() / 40 for u, i, y in step_batches).backward()
        for opt in opts:
            opt.step()
    return model.state_dict()


@pytest.mark.timeout(180)
def test_the_exchange_equals_one_process_on_both_ranks_data_with_bias_tables(tmp_path):
    """With the bias tables (four sparse tables, two of width 1) gloo DDP's own sparse all-reduce
    drifts from the exact result (about 0.07 on a user row after 6 steps, torch 2.13), so the
    reference here is one process training on both ranks' batches."""
    spawn(worker, (2, free_port(), str(tmp_path)))
    truth = one_process_steps(True)
    for r in (0, 1):
        ours = torch.load(tmp_path / f"rank{r}.pt")["ours_with_bias"]
        assert set(ours) == set(truth) and "user_bias.weight" in truth
        for name, value in truth.items():
            torch.testing.assert_close(ours[name], value, rtol=0, atol=1e-6, msg=name)


def gather_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    from sparkrec.train.sparse_grads import all_gather_sparse_mean

    # rank 0 touches rows 1 (twice) and 3; rank 1 touches rows 3 and 4; the second parameter has
    # a gradient on rank 1 only, the third on no rank.
    if rank == 0:
        g = torch.sparse_coo_tensor([[1, 3, 1]], torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), (5, 2))
        h, h_present = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0), (3,)), False
    else:
        g = torch.sparse_coo_tensor([[3, 4]], torch.tensor([[10.0, 20.0], [30.0, 40.0]]), (5, 2))
        h, h_present = torch.sparse_coo_tensor([[2]], torch.tensor([8.0]), (3,)), True
    none = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0, 2), (4, 2))
    out = all_gather_sparse_mean([g, h, none], world, present=[True, h_present, False])
    torch.save([t.to_dense() if t is not None else None for t in out], os.path.join(out_dir, f"rank{rank}.pt"))
    tdist.destroy_process_group()


@pytest.mark.timeout(120)
def test_exchange_sums_duplicate_rows_and_averages_over_ranks(tmp_path):
    spawn(gather_worker, (2, free_port(), str(tmp_path)))
    for r in (0, 1):
        g, h, none = torch.load(tmp_path / f"rank{r}.pt")
        expected = torch.zeros(5, 2)
        expected[1] = torch.tensor([6.0, 8.0]) / 2
        expected[3] = torch.tensor([13.0, 24.0]) / 2
        expected[4] = torch.tensor([30.0, 40.0]) / 2
        assert torch.equal(g, expected)
        assert torch.equal(h, torch.tensor([0.0, 0.0, 4.0]))
        assert none is None  # no rank had a gradient: the optimizer must skip it everywhere


@pytest.mark.parametrize("ending, status", [("ok", 0), ("raise", 1)])
def test_a_worker_exits_without_teardown_with_its_scripts_status(tmp_path, ending, status):
    """What ``exit_without_teardown`` skips is only the interpreter's teardown: the script's output
    is all written, and a script that ends with an uncaught exception still exits 1, with its
    traceback (TorchDistributor's torchrun must see a failed rank as failed)."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from sparkrec.train import distributed as dist
        dist.exit_without_teardown()
        print("result written", flush=False)
        sys.stderr.write("last words")
        if {ending!r} == "raise":
            raise RuntimeError("the worker failed")
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == status
    assert done.stdout == "result written\n"
    assert "last words" in done.stderr
    assert ("RuntimeError: the worker failed" in done.stderr) == (ending == "raise")
