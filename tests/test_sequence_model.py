"""The history-based user tower as a module: causality, padding, serving = training, no user table, and
an ensemble of towers scoring as one dot product."""
import pytest
import torch

from sparkrec.models.block_scoring import DotProductScorer, Histories, make_scorer, top_k_items
from sparkrec.models.registry import model_from_dict
from sparkrec.models.sequence import SequenceConfig, SequenceEnsemble, SequenceModel, build, warm_started


def config(**overrides):
    base = dict(kind="sequence", num_items=30, factors=8, max_len=6, encoder="attention", blocks=2, heads=2,
                dropout=0.0, implicit=True, rating_min=1.0, rating_max=5.0, use_bias=True, dense_items=False)
    return SequenceConfig(**{**base, **overrides})


@pytest.mark.parametrize("encoder", ["attention", "mean"])
def test_a_state_depends_only_on_the_items_before_it(encoder):
    torch.manual_seed(0)
    model = SequenceModel(config(encoder=encoder)).eval()
    items = torch.tensor([[-1, -1, 3, 4, 5, 6]])
    changed = items.clone()
    changed[0, 5] = 9   # only the last item differs
    with torch.no_grad():
        a, b = model.states(items), model.states(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5], b[:, 5])


def test_padding_and_out_of_vocabulary_items_change_nothing():
    torch.manual_seed(0)
    model = SequenceModel(config()).eval()
    with torch.no_grad():
        plain, _ = model.user_vectors(torch.tensor([[-1, -1, -1, 3, 4, 5]]))
        # An item added to the vocabulary after training (index >= num_items) is padding to the model.
        unknown, _ = model.user_vectors(torch.tensor([[-1, -1, 99, 3, 4, 5]]))
    torch.testing.assert_close(plain, unknown)


def test_the_model_has_no_per_user_parameters():
    small, large = SequenceModel(config()), SequenceModel(config())
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in large.parameters())
    assert config().num_users is None


def test_explicit_leave_one_out_never_sees_the_label_it_predicts():
    torch.manual_seed(0)
    model = SequenceModel(config(implicit=False, encoder="mean")).eval()
    items = torch.tensor([[-1, 2, 3, 4]])
    labels = torch.tensor([[0.0, 4.0, 1.0, 5.0]])
    other = labels.clone()
    other[0, 3] = 1.0   # the rating of item 4 changes
    with torch.no_grad():
        a, b = model.leave_one_out(items, labels), model.leave_one_out(items, other)
    assert a[0, 3] == b[0, 3]                      # its own prediction is unaffected
    assert not torch.allclose(a[0, 1:3], b[0, 1:3])  # the others' predictions use it


def test_explicit_serving_equals_the_pooled_prediction_over_the_whole_history():
    torch.manual_seed(0)
    model = SequenceModel(config(implicit=False, encoder="mean")).eval()
    items, labels = torch.tensor([[-1, 2, 3, 4]]), torch.tensor([[0.0, 4.0, 1.0, 5.0]])
    with torch.no_grad():
        vectors, constants = model.user_vectors(items, labels)
        served = model.scores(vectors, constants, torch.tensor([[7]]))
        # Leave-one-out with item 7 added as a fourth history item predicts it from the other three.
        loo = model.leave_one_out(torch.tensor([[2, 3, 4, 7]]), torch.tensor([[4.0, 1.0, 5.0, 3.0]]))
    assert served.item() == pytest.approx(loo[0, 3].item(), rel=1e-5)


def test_top_k_from_histories_matches_brute_force():
    torch.manual_seed(1)
    model = SequenceModel(config()).eval()
    histories = Histories(torch.tensor([[-1, -1, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]))
    scorer = make_scorer(model, 30)
    assert isinstance(scorer, DotProductScorer)
    scores, items, counts = top_k_items(scorer, histories, 5, chunk=7, seen_rows=torch.tensor([0, 0]),
                                        seen_items=torch.tensor([1, 2]))
    with torch.no_grad():
        vectors, constants = model.user_vectors(histories.items)
        table, bias = model.item_table()
        full = vectors @ table.T + bias + constants[:, None]
    full[0, [1, 2]] = float("-inf")
    expected = full.topk(5, dim=1)
    torch.testing.assert_close(items, expected.indices)
    torch.testing.assert_close(scores, expected.values)


def test_warm_start_keeps_known_items_and_adds_new_ones():
    torch.manual_seed(0)
    old = SequenceModel(config())
    new = warm_started(config(num_items=35), old)
    torch.testing.assert_close(new.item_embedding.weight[:30], old.item_embedding.weight[:30])
    assert torch.all(new.item_embedding.weight[35] == 0)      # the padding row moved to the new end
    torch.testing.assert_close(new.positions.weight, old.positions.weight)


def test_an_ensemble_scores_the_sum_of_its_towers_by_one_dot_product():
    torch.manual_seed(0)
    model = build(config(members=3)).eval()
    assert isinstance(model, SequenceEnsemble) and len(model.towers()) == 3
    first, second = model.towers()[:2]
    assert not torch.allclose(first.item_embedding.weight, second.item_embedding.weight)  # own initialisation
    with torch.no_grad():  # biases start at 0: give each tower its own, so their sum is checked
        for tower in model.towers():
            tower.item_bias.weight.normal_()
    histories = Histories(torch.tensor([[-1, -1, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]))
    with torch.no_grad():
        summed = 0.0
        for tower in model.towers():
            vectors, constants = tower.user_vectors(histories.items)
            table, bias = tower.item_table()
            summed = summed + vectors @ table.T + bias + constants[:, None]
        vectors, constants = model.user_vectors(histories.items)
        assert vectors.shape == (2, 3 * 8) and model.item_table()[0].shape == (30, 3 * 8)
        torch.testing.assert_close(model.scores(vectors, constants, torch.arange(30).expand(2, 30)), summed)
    scores, items, _ = top_k_items(make_scorer(model, 30), histories, 5, chunk=7, seen_rows=torch.tensor([0]),
                                   seen_items=torch.tensor([1]))
    summed[0, 1] = float("-inf")
    torch.testing.assert_close(items, summed.topk(5, dim=1).indices)
    torch.testing.assert_close(scores, summed.topk(5, dim=1).values)


def test_an_ensemble_loads_from_its_saved_config_and_older_configs_are_one_tower():
    torch.manual_seed(0)
    model = build(config(members=2)).eval()
    loaded = model_from_dict(model.cfg.to_dict())
    loaded.load_state_dict(model.state_dict())
    items = torch.tensor([[-1, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().user_vectors(items)[0], model.user_vectors(items)[0])
    # One tower saves as before the setting existed (model.json, checkpoints' resume key), and loads.
    assert "members" not in config().to_dict() and config(members=2).to_dict()["members"] == 2
    assert isinstance(model_from_dict(config().to_dict()), SequenceModel)
    raw = torch.tensor([-6.0, 0.0, 6.0])  # the published probability is the towers' mean logit's
    torch.testing.assert_close(model.to_score(raw), torch.sigmoid(raw / 2))


def test_ensembles_are_for_implicit_data_and_warm_start_tower_by_tower():
    with pytest.raises(ValueError, match="1 for explicit ratings"):
        config(implicit=False, encoder="mean", members=2)
    torch.manual_seed(0)
    old = build(config(members=2))
    new = warm_started(config(num_items=35, members=2), old)
    for new_tower, old_tower in zip(new.towers(), old.towers()):
        torch.testing.assert_close(new_tower.item_embedding.weight[:30], old_tower.item_embedding.weight[:30])
        torch.testing.assert_close(new_tower.positions.weight, old_tower.positions.weight)
    with pytest.raises(ValueError, match="members=2"):
        warm_started(config(num_items=35), old)
