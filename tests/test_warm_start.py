import pytest
import torch

from sparkrec.models.ncf import NCF, NCFConfig, warm_started


def cfg(users, items, **kw):
    base = dict(kind="neumf", num_users=users, num_items=items, factors=4, mlp_layers=(8, 4), dropout=0.0,
                implicit=False, rating_min=1.0, rating_max=5.0, use_bias=True, dense_items=False)
    return NCFConfig(**{**base, **kw})


def test_existing_rows_and_dense_layers_are_copied_new_rows_fresh():
    torch.manual_seed(0)
    old = NCF(cfg(5, 3))
    with torch.no_grad():
        for p in old.parameters():
            p.add_(1.0)  # "trained": far from any fresh initialisation
    torch.manual_seed(1)
    new = warm_started(cfg(8, 4), old)
    for name in ("user_gmf", "user_mlp", "user_bias"):
        assert torch.equal(getattr(new, name).weight[:5], getattr(old, name).weight)
        assert getattr(new, name).weight[5:].abs().max() < 0.1  # N(0, 0.01) or zero biases
    for name in ("item_gmf", "item_mlp", "item_bias"):
        assert torch.equal(getattr(new, name).weight[:3], getattr(old, name).weight)
        assert getattr(new, name).weight[3:].abs().max() < 0.1
    for name, tensor in old.tower.state_dict().items():
        assert torch.equal(new.tower.state_dict()[name], tensor)
    assert torch.equal(new.output.weight, old.output.weight)
    u, i = torch.tensor([0, 4]), torch.tensor([2, 1])
    assert torch.allclose(new(u, i), old(u, i))  # known pairs score as before


def test_mismatched_architecture_or_shrunk_vocabulary_is_refused():
    old = NCF(cfg(5, 3))
    with pytest.raises(ValueError, match="factors=4"):
        warm_started(cfg(5, 3, factors=8), old)
    with pytest.raises(ValueError, match="not a prefix"):
        warm_started(cfg(4, 3), old)
