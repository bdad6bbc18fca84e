"""NCF models: the contract's submodules, paper initialisation, output mapping, sparse gradients,
and NeuMF initialised from GMF + MLP."""
import pytest
import torch

from model_configs import ncf_config
from sparkrec.models.ncf import INIT_STD, NCF, NCFConfig, neumf_from_pretrained

USERS, ITEMS = 50, 30


def make(kind, **kw):
    torch.manual_seed(0)
    return NCF(ncf_config(kind=kind, num_users=USERS, num_items=ITEMS, factors=4, mlp_layers=(16, 8, 4),
                          **{"use_bias": False, **kw}))


def pairs(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(USERS, (n,), generator=g), torch.randint(ITEMS, (n,), generator=g)


@pytest.mark.parametrize("kind,present,absent", [
    ("gmf", {"user_gmf", "item_gmf", "output"}, {"user_mlp", "item_mlp", "tower"}),
    ("mlp", {"user_mlp", "item_mlp", "tower", "output"}, {"user_gmf", "item_gmf"}),
    ("neumf", {"user_gmf", "item_gmf", "user_mlp", "item_mlp", "tower", "output"}, set()),
])
def test_contract_submodules_and_shapes(kind, present, absent):
    model = make(kind, use_bias=True)
    names = {n for n, _ in model.named_children()}
    assert present | {"user_bias", "item_bias"} <= names and not absent & names
    for name in present & {"user_gmf", "item_gmf", "user_mlp", "item_mlp"}:
        emb = getattr(model, name)
        assert emb.sparse and emb.num_embeddings == (USERS if name.startswith("user") else ITEMS)
    if kind != "gmf":
        assert model.user_mlp.embedding_dim == 8 and model.tower[0].in_features == 16
    width = {"gmf": 4, "mlp": 4, "neumf": 8}[kind]
    assert model.output.in_features == width
    u, i = pairs()
    assert model(u, i).shape == (64,)


def test_embeddings_start_at_paper_init():
    model = NCF(ncf_config(kind="neumf", num_users=20_000, num_items=10, factors=8))
    std = model.user_gmf.weight.std().item()
    assert abs(std - INIT_STD) < 0.001 and abs(model.user_gmf.weight.mean().item()) < 0.001


def test_forward_matches_the_contract_formula():
    """raw = output([gmf ; tower([user_mlp ; item_mlp])]) + biases, in that order."""
    model = make("neumf", use_bias=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        u, i = pairs()
        gmf = model.user_gmf(u) * model.item_gmf(i)
        tower = model.tower(torch.cat([model.user_mlp(u), model.item_mlp(i)], 1))
        want = model.output(torch.cat([gmf, tower], 1)).squeeze(1) + model.user_bias(u).squeeze(1) \
            + model.item_bias(i).squeeze(1)
        assert torch.allclose(model(u, i), want, atol=1e-6)


def test_predict_maps_to_the_rating_range_and_probabilities():
    explicit = make("gmf", implicit=False, rating_min=0.5, rating_max=5.0)
    with torch.no_grad():
        explicit.output.bias.fill_(50.0)
        u, i = pairs()
        assert torch.allclose(explicit.predict(u, i), torch.full((64,), 5.0))
        explicit.output.bias.fill_(-50.0)
        assert torch.allclose(explicit.predict(u, i), torch.full((64,), 0.5))
    implicit = make("mlp")
    p = implicit.predict(*pairs())
    assert ((p > 0) & (p < 1)).all()


def test_embedding_gradients_are_sparse_and_touch_only_the_batch():
    model = make("neumf", use_bias=True)
    u, i = torch.tensor([1, 2, 2]), torch.tensor([3, 4, 5])
    (model(u, i).sum() + model.embedding_sq_norm(u, i).sum()).backward()
    for name in ("user_gmf", "item_gmf", "user_mlp", "item_mlp", "user_bias", "item_bias"):
        grad = getattr(model, name).weight.grad
        assert grad.is_sparse
        rows = set(grad.coalesce().indices()[0].tolist())
        assert rows == ({1, 2} if name.startswith("user") else {3, 4, 5})
    assert not model.output.weight.grad.is_sparse


def test_neumf_from_pretrained_blends_the_output_layers():
    """With alpha = 0.5 the initial NeuMF logit is the average of the GMF and MLP logits (biases
    off), so pretraining gives NeuMF both models' knowledge at step 0."""
    gmf, mlp = make("gmf"), make("mlp")
    with torch.no_grad():
        for p in list(gmf.parameters()) + list(mlp.parameters()):
            p.normal_(0, 0.5)
    cfg = ncf_config(kind="neumf", num_users=USERS, num_items=ITEMS, factors=4, mlp_layers=(16, 8, 4), use_bias=False)
    neumf = neumf_from_pretrained(cfg, gmf, mlp, alpha=0.5)
    u, i = pairs()
    with torch.no_grad():
        assert torch.allclose(neumf(u, i), 0.5 * gmf(u, i) + 0.5 * mlp(u, i), atol=1e-5)
        assert torch.equal(neumf.user_gmf.weight, gmf.user_gmf.weight)
        assert torch.equal(neumf.tower[0].weight, mlp.tower[0].weight)


def test_neumf_from_pretrained_refuses_mismatched_parts():
    gmf, mlp = make("gmf"), make("mlp")
    wrong = ncf_config(kind="neumf", num_users=USERS + 1, num_items=ITEMS, factors=4, mlp_layers=(16, 8, 4))
    with pytest.raises(ValueError, match="51"):
        neumf_from_pretrained(wrong, gmf, mlp)
    other_tower = ncf_config(kind="neumf", num_users=USERS, num_items=ITEMS, factors=4, mlp_layers=(16, 8))
    with pytest.raises(ValueError, match="mlp_layers"):
        neumf_from_pretrained(other_tower, gmf, mlp)


@pytest.mark.parametrize("kw,match", [
    ({"kind": "ncf"}, "train.model"),
    ({"mlp_layers": (15, 8)}, "even"),
    ({"dropout": 1.0}, "dropout"),
    ({"num_users": 0}, "at least one user"),
])
def test_config_errors_name_the_problem(kw, match):
    base = {"kind": "neumf", "num_users": USERS, "num_items": ITEMS}
    with pytest.raises(ValueError, match=match):
        ncf_config(**{**base, **kw})


def test_config_round_trips_through_a_dict():
    cfg = ncf_config(kind="mlp", num_users=3, num_items=4, mlp_layers=(8, 4), implicit=False, use_bias=True)
    assert NCFConfig.from_dict(cfg.to_dict()) == cfg


def test_the_model_config_has_no_defaults_of_its_own():
    """Defaults live in train.* only: the model dataclass cannot silently disagree with them."""
    with pytest.raises(TypeError, match="missing"):
        NCFConfig(kind="neumf", num_users=USERS, num_items=ITEMS)
