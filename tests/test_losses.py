"""The training losses against brute-force computations (no Spark)."""
import math

import pytest
import torch
import torch.nn.functional as F

from sparkrec.train.losses import chunk_size, pairwise_loss, sampled_softmax_loss, softmax_loss

SEED = 3


def _problem(rows=7, items=23, dim=5, bias=True):
    gen = torch.Generator().manual_seed(SEED)
    users = torch.randn(rows, dim, generator=gen, dtype=torch.float64).float().requires_grad_()
    table = torch.randn(items, dim, generator=gen).requires_grad_()
    item_bias = torch.randn(items, generator=gen).requires_grad_() if bias else None
    targets = torch.randint(items, (rows,), generator=gen)
    return users, table, item_bias, targets


@pytest.mark.parametrize("chunk", [1, 4, 23, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_chunked_softmax_equals_the_full_cross_entropy_and_its_gradients(chunk, bias):
    users, table, item_bias, targets = _problem(bias=bias)
    loss = softmax_loss(users, targets, table, item_bias, chunk=chunk)
    grads = torch.autograd.grad(loss, [users, table] + ([item_bias] if bias else []))
    logits = users @ table.T + (item_bias if bias else 0.0)
    expected = F.cross_entropy(logits, targets, reduction="sum")
    expected_grads = torch.autograd.grad(expected, [users, table] + ([item_bias] if bias else []))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [4, 1000])  # recomputed blocks; one block kept from forward
def test_bfloat16_products_match_the_cross_entropy_of_the_rounded_vectors(chunk):
    users, table, item_bias, targets = _problem(rows=40, items=300, dim=16)
    loss = softmax_loss(users, targets, table, item_bias, chunk=chunk, dtype=torch.bfloat16)
    grads = torch.autograd.grad(loss, [users, table, item_bias])
    # The products see bfloat16 vectors; the log-sum-exp and the gradients stay float32.
    rounded_users, rounded_table = (t.detach().bfloat16().double().requires_grad_() for t in (users, table))
    bias64 = item_bias.detach().double().requires_grad_()
    logits = rounded_users @ rounded_table.T + bias64
    expected = F.cross_entropy(logits, targets, reduction="sum")
    expected_grads = torch.autograd.grad(expected, [rounded_users, rounded_table, bias64])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-3)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("chunk", [4, 1000])  # recomputed blocks; one block kept from forward
def test_chunked_softmax_gives_the_same_gradients_on_a_second_backward(chunk):
    users, table, item_bias, targets = _problem()
    loss = softmax_loss(users, targets, table, item_bias, chunk=chunk)
    first = torch.autograd.grad(loss, [users, table, item_bias], retain_graph=True)
    second = torch.autograd.grad(loss, [users, table, item_bias])
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_chunk_size_keeps_a_block_within_the_budget():
    assert chunk_size(1024, 1.0) == 256          # 1024 rows x 256 floats x 4 bytes = 1 MiB
    assert chunk_size(10**9, 1.0) == 1           # never zero


def test_sampled_softmax_applies_the_logq_correction_and_masks_accidental_hits():
    users, table, item_bias, targets = _problem(rows=4, items=10)
    targets = torch.tensor([1, 2, 1, 3])        # item 1 twice: rows 0 and 2 must not treat it as a negative
    drawn = torch.tensor([5, 2, 7])             # item 2 drawn: row 1's accidental hit
    candidates = torch.cat([targets, drawn])
    log_q = torch.log(torch.arange(1, len(candidates) + 1).float())
    loss = sampled_softmax_loss(users, targets, table[candidates], item_bias[candidates], candidates, log_q)
    logits = users @ table[candidates].T + item_bias[candidates] - log_q
    expected = 0.0
    for row in range(4):
        keep = [c for c in range(len(candidates)) if c == row or candidates[c] != targets[row]]
        expected += -(logits[row, row] - torch.logsumexp(logits[row, keep], 0))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    params = [users, table, item_bias]
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_sampled_softmax_without_in_batch_negatives_sees_only_the_own_positive():
    users, table, item_bias, targets = _problem(rows=3, items=10, bias=False)
    drawn = torch.tensor([4, 8])
    candidates = torch.cat([targets, drawn])
    zero = torch.zeros(len(candidates))
    loss = sampled_softmax_loss(users, targets, table[candidates], None, candidates, zero, in_batch=False)
    expected = sum(F.cross_entropy((users[r] @ table[torch.cat([targets[r:r + 1], drawn])].T)[None],
                                   torch.tensor([0]), reduction="sum") for r in range(3))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(torch.autograd.grad(loss, [users, table]), torch.autograd.grad(expected, [users, table])):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_pairwise_losses():
    positive, negative = torch.tensor([2.0, -1.0]), torch.tensor([[0.5, 1.0], [0.0, -3.0]])
    bpr = -sum(math.log(1 / (1 + math.exp(-(p - n)))) for p, row in zip([2.0, -1.0], [[0.5, 1.0], [0.0, -3.0]])
               for n in row)
    assert pairwise_loss("bpr", positive, negative).item() == pytest.approx(bpr, rel=1e-6)
    bce = (F.binary_cross_entropy_with_logits(positive, torch.ones(2), reduction="sum")
           + F.binary_cross_entropy_with_logits(negative, torch.zeros(2, 2), reduction="sum"))
    assert pairwise_loss("bce", positive, negative).item() == pytest.approx(bce.item(), rel=1e-6)
