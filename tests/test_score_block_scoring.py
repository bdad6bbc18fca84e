"""The decomposed NCF scorer equals the model's own forward pass, and its top-K equals brute force."""
import itertools

import pytest
import torch
from torch import nn

from model_configs import ncf_config
from sparkrec.errors import SparkrecError
from sparkrec.models.ncf import NCF
from sparkrec.models.autoencoders import AutoRec, AutoRecConfig, MultVAE, MultVAEConfig
from sparkrec.models.block_scoring import (DotProductScorer, PairwiseScorer, items_per_chunk, make_scorer,
                                          top_k_items)
from sparkrec.models import decomposed_ncf, native
from sparkrec.models.decomposed_ncf import DecomposedNCF

NUM_USERS, NUM_ITEMS = 40, 57
HAS_COMPILER = native._compiler() is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler here: the fused kernel is not built")


def trained_like(kind, use_bias=False, dropout=0.0, mlp_layers=(16, 8, 4), seed=0):
    """An NCF with weights far from init (std 0.5), so every term of the score matters."""
    torch.manual_seed(seed)
    model = NCF(ncf_config(kind=kind, num_users=NUM_USERS, num_items=NUM_ITEMS, factors=6,
                           mlp_layers=mlp_layers, dropout=dropout, use_bias=use_bias))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


def all_pairs(model):
    users = torch.arange(NUM_USERS).repeat_interleave(NUM_ITEMS)
    items = torch.arange(NUM_ITEMS).repeat(NUM_USERS)
    with torch.no_grad():
        return model(users, items).view(NUM_USERS, NUM_ITEMS)


@pytest.mark.parametrize("kind,use_bias,dropout,mlp_layers,tile_pairs", [
    *itertools.product(["gmf", "mlp", "neumf"], [False, True], [0.0, 0.3], [(16, 8, 4)], [8192]),
    ("neumf", True, 0.0, (16,), 8192),   # tower without hidden layers
    ("mlp", False, 0.2, (12, 6), 8192),  # one hidden layer: the tail is only ReLU + dropout
    ("neumf", True, 0.0, (16, 8, 4), 3 * NUM_USERS),  # tiles of 3 items; the last one of a block shorter
    ("neumf", True, 0.0, (16, 8, 4), 1),              # below one item per user: one item a tile
])
@pytest.mark.parametrize("native", [True, False])  # the fused C++ kernel / the torch path
def test_decomposed_scores_equal_forward_on_every_pair(kind, use_bias, dropout, mlp_layers, tile_pairs, native,
                                                       monkeypatch):
    monkeypatch.setattr(decomposed_ncf, "TOWER_TILE_PAIRS", tile_pairs)
    model = trained_like(kind, use_bias, dropout, mlp_layers)
    assert isinstance(make_scorer(model, NUM_ITEMS), DecomposedNCF)
    scorer = DecomposedNCF(model, native=native)
    # The kernel serves every tower of ReLU layers (not a tower without hidden layers, nor GMF).
    assert (scorer.native is not None) == (native and getattr(scorer, "layers", None) is not None and HAS_COMPILER)
    with torch.inference_mode():
        users = torch.arange(NUM_USERS)
        state = scorer.user_state(users)
        blocks = torch.cat([scorer.block(state, s, min(NUM_ITEMS, s + 10)) for s in range(0, NUM_ITEMS, 10)], dim=1)
    expected = all_pairs(model)
    assert expected.std() > 0.1  # scores spread: a wrong term would show
    torch.testing.assert_close(blocks, expected, rtol=1e-5, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("mlp_layers", [(64, 32, 16, 8), (40, 20, 10), (18, 9)])  # 8-row groups and remainders
@pytest.mark.parametrize("threads", [1, 3])
def test_the_fused_kernel_equals_the_torch_path_on_any_block(mlp_layers, threads):
    model = trained_like("neumf", use_bias=True, mlp_layers=mlp_layers)
    fused, torch_path = DecomposedNCF(model), DecomposedNCF(model, native=False)
    assert fused.native is not None and torch_path.native is None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the kernel splits users over this many threads
    try:
        with torch.inference_mode():
            for users, (start, end) in [(torch.arange(NUM_USERS), (0, NUM_ITEMS)), (torch.tensor([7]), (5, 38)),
                                        (torch.tensor([39, 0, 39, 3]), (40, NUM_ITEMS)), (torch.arange(17), (16, 17))]:
                got = fused.block(fused.user_state(users), start, end)
                want = torch_path.block(torch_path.user_state(users), start, end)
                assert got.numel() == 1 or got.std() > 0.1
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(previous)


@needs_compiler
def test_the_fused_kernel_covers_many_items_and_refuses_what_it_cannot_hold(monkeypatch):
    torch.manual_seed(1)
    model = NCF(ncf_config(kind="neumf", num_users=9, num_items=700, factors=4, mlp_layers=(32, 16, 8),
                           dropout=0.0, use_bias=True)).eval()
    fused, torch_path = DecomposedNCF(model), DecomposedNCF(model, native=False)
    with torch.inference_mode():  # blocks span several of the kernel's 256-item blocks
        for start, end in [(0, 700), (3, 611)]:
            torch.testing.assert_close(fused.block(fused.user_state(torch.arange(9)), start, end),
                                       torch_path.block(torch_path.user_state(torch.arange(9)), start, end),
                                       rtol=1e-5, atol=1e-5)
    wide = trained_like("neumf", mlp_layers=(600, 300, 8))
    monkeypatch.setattr(decomposed_ncf, "MAX_NATIVE_WIDTH", 10**6)  # past Python's check: the kernel's own
    scorer = DecomposedNCF(wide)
    with pytest.raises(SparkrecError, match="refused widths"), torch.inference_mode():
        scorer.block(scorer.user_state(torch.arange(3)), 0, NUM_ITEMS)


@needs_compiler
def test_a_nan_in_the_model_stays_nan_in_both_paths():
    # A diverged model must not be ranked with made-up scores: max(NaN, floor) is NaN, as in torch.
    model = trained_like("neumf", use_bias=True, mlp_layers=(16, 8, 4))
    with torch.no_grad():
        model.user_mlp.weight[3] = float("nan")
        model.item_mlp.weight[5] = float("nan")
    for scorer in (DecomposedNCF(model), DecomposedNCF(model, native=False)):
        with torch.inference_mode():
            scores = scorer.block(scorer.user_state(torch.arange(NUM_USERS)), 0, NUM_ITEMS)
        assert scores[3].isnan().all() and scores[:, 5].isnan().all()
        assert not scores[[0, 1, 2]][:, [0, 1, 2]].isnan().any()


@pytest.mark.parametrize("env,mlp_layers", [({"CXX": "false"}, (16, 8, 4)),       # the compile fails
                                            ({"SPARKREC_NATIVE": "0"}, (16, 8, 4)),  # switched off
                                            ({}, (600, 300, 8))])                    # wider than the kernel takes
def test_the_torch_path_serves_where_the_kernel_cannot(env, mlp_layers, monkeypatch, tmp_path):
    monkeypatch.setenv("SPARKREC_NATIVE_DIR", str(tmp_path))  # nothing cached: a real compile attempt
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    native.ncf_tower.cache_clear()
    try:
        model = trained_like("neumf", use_bias=True, mlp_layers=mlp_layers)
        scorer = make_scorer(model, NUM_ITEMS)
        assert isinstance(scorer, DecomposedNCF) and scorer.native is None
        with torch.inference_mode():
            scores = scorer.block(scorer.user_state(torch.arange(NUM_USERS)), 0, NUM_ITEMS)
        torch.testing.assert_close(scores, all_pairs(model), rtol=1e-5, atol=1e-5)
    finally:
        native.ncf_tower.cache_clear()  # later tests build (or load) the kernel under the real settings


def test_decomposed_scores_equal_forward_when_the_tower_does_not_start_with_relu():
    # The scorer moves each layer's item term past the ReLU after it; a tower with another
    # activation takes the plain path (add, then the tail as it is).
    model = trained_like("neumf", True, 0.0, (16, 8, 4))
    model.tower[1] = nn.Tanh()
    scorer = make_scorer(model, NUM_ITEMS)
    with torch.inference_mode():
        blocks = scorer.block(scorer.user_state(torch.arange(NUM_USERS)), 0, NUM_ITEMS)
    torch.testing.assert_close(blocks, all_pairs(model), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, NUM_ITEMS])
def test_top_k_with_exclusion_equals_brute_force(chunk):
    model = trained_like("neumf", use_bias=True)
    scorer = make_scorer(model, NUM_ITEMS)
    full = all_pairs(model)
    users = torch.tensor([3, 0, 17, 39])
    # user 3: its best item and a duplicate; user 17: all but 3 items; user 39: nothing seen.
    best_of_3 = int(full[3].argmax())
    rows = [0, 0, 0] + [2] * (NUM_ITEMS - 3) + [1]
    items = [best_of_3, 5, 5] + list(range(3, NUM_ITEMS)) + [NUM_ITEMS + 100]  # out-of-range is ignored
    scores, top, counts = top_k_items(scorer, users, 10, chunk, torch.tensor(rows), torch.tensor(items))

    assert counts.tolist() == [10, 10, 3, 10]
    masked = full[users].clone()
    masked[0, [best_of_3, 5]] = float("-inf")
    masked[2, 3:] = float("-inf")
    ref_scores, ref_items = masked.topk(10, dim=1)
    assert torch.equal(top[[0, 1, 3]], ref_items[[0, 1, 3]])
    assert set(top[2, :3].tolist()) == {0, 1, 2}
    torch.testing.assert_close(scores[[0, 1, 3]], ref_scores[[0, 1, 3]])
    assert best_of_3 not in top[0].tolist()
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_only_candidate_items_are_recommended():
    model = trained_like("mlp", use_bias=True)
    scorer = make_scorer(model, NUM_ITEMS)
    allowed = torch.zeros(NUM_ITEMS, dtype=torch.bool)
    allowed[::4] = True                                   # 15 candidates
    users = torch.tensor([0, 1])
    # user 0 saw 3 candidates and 2 non-candidates: 12 candidates remain, so only 12 of K=14.
    rows, items = torch.tensor([0] * 5), torch.tensor([0, 4, 8, 1, 2])
    scores, top, counts = top_k_items(scorer, users, 14, 6, rows, items, allowed)
    assert counts.tolist() == [12, 14]
    masked = all_pairs(model)[users].masked_fill(~allowed, float("-inf"))
    masked[0, [0, 4, 8]] = float("-inf")
    assert torch.equal(top[0, :12], masked[0].topk(12).indices)
    assert torch.equal(top[1], masked[1].topk(14).indices)


def test_k_above_catalog_returns_every_item_once():
    scorer = make_scorer(trained_like("gmf"), NUM_ITEMS)
    _, top, counts = top_k_items(scorer, torch.arange(5), NUM_ITEMS + 20, chunk=9)
    assert top.shape == (5, NUM_ITEMS) and counts.tolist() == [NUM_ITEMS] * 5
    assert all(sorted(row) == list(range(NUM_ITEMS)) for row in top.tolist())


def test_chunk_fits_the_memory_budget():
    scorer = make_scorer(trained_like("neumf", mlp_layers=(64, 32, 16, 8)), NUM_ITEMS)
    assert scorer.floats_per_pair == 1   # the block's scores: the tower's activations are per tile
    assert items_per_chunk(scorer, batch_users=4, budget_mib=1 / 4096) == 256 // (4 * 1 * 4)
    assert items_per_chunk(scorer, batch_users=4, budget_mib=1024) == NUM_ITEMS


class DotModel(nn.Module):
    """A model outside the NCF family: scored pairwise through its forward."""

    def __init__(self):
        super().__init__()
        self.users = nn.Embedding(NUM_USERS, 3)
        self.items = nn.Embedding(NUM_ITEMS, 3)

    def forward(self, user_idx, item_idx):
        return (self.users(user_idx) * self.items(item_idx)).sum(1).tanh()


def test_other_models_are_scored_pairwise():
    torch.manual_seed(1)
    model = DotModel().eval()
    scorer = make_scorer(model, NUM_ITEMS)
    assert isinstance(scorer, PairwiseScorer)
    _, top, _ = top_k_items(scorer, torch.arange(NUM_USERS), 5, chunk=8)
    assert torch.equal(top, all_pairs(model).topk(5, dim=1).indices)


class ScaledNCF(NCF):
    """NCF whose forward no longer matches its submodules (as if the contract drifted)."""

    def forward(self, user_idx, item_idx):
        return 2.0 * super().forward(user_idx, item_idx)


def test_contract_drift_fails_loudly():
    model = ScaledNCF(ncf_config(kind="neumf", num_users=NUM_USERS, num_items=NUM_ITEMS, mlp_layers=(8, 4),
                                 use_bias=False)).eval()
    with pytest.raises(SparkrecError, match="differ from ScaledNCF.forward"):
        make_scorer(model, NUM_ITEMS)
    with pytest.raises(SparkrecError, match="model has 57 items"):
        make_scorer(trained_like("gmf"), NUM_ITEMS + 1)


def trained_autoencoder(kind, seed=0):
    """A Mult-VAE or I-AutoRec with weights and folded-in codes far from init."""
    torch.manual_seed(seed)
    if kind == "multvae":
        model = MultVAE(MultVAEConfig(kind="multvae", num_users=NUM_USERS, num_items=NUM_ITEMS, encoder_layers=(12,),
                                      latent=4, input_dropout=0.5, implicit=True))
    else:
        model = AutoRec(AutoRecConfig(kind="autorec", num_users=NUM_USERS, num_items=NUM_ITEMS, hidden=5,
                                      implicit=False, rating_min=0.5, rating_max=5.0))
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("kind", ["multvae", "autorec"])
def test_autoencoders_score_as_one_matrix_product_equal_to_forward(kind):
    # Their scores are user code . item code (+ biases): served by a matrix product per block,
    # not by forward on every (user, item) pair.
    model = trained_autoencoder(kind)
    scorer = make_scorer(model, NUM_ITEMS)
    assert isinstance(scorer, DotProductScorer)
    with torch.inference_mode():
        state = scorer.user_state(torch.arange(NUM_USERS))
        blocks = torch.cat([scorer.block(state, s, min(NUM_ITEMS, s + 10)) for s in range(0, NUM_ITEMS, 10)], dim=1)
    expected = all_pairs(model)
    assert expected.std() > 0.1
    torch.testing.assert_close(blocks, expected, rtol=1e-5, atol=1e-5)
    _, top, _ = top_k_items(scorer, torch.arange(NUM_USERS), 5, chunk=8)
    assert torch.equal(top, expected.topk(5, dim=1).indices)


class ShiftedMultVAE(MultVAE):
    """Mult-VAE whose forward adds a per-item term its item table does not hold."""

    def forward(self, user_idx, item_idx):
        return super().forward(user_idx, item_idx) + 0.1 * item_idx


def test_dot_product_contract_drift_fails_loudly():
    model = trained_autoencoder("multvae")
    drifted = ShiftedMultVAE(model.cfg)
    drifted.load_state_dict(model.state_dict())
    with pytest.raises(SparkrecError, match="DotProductScorer scores differ from ShiftedMultVAE.forward"):
        make_scorer(drifted.eval(), NUM_ITEMS)
