"""Layers and models: cross-layer formulas, zero-weight identity, shapes, batch independence."""

from __future__ import annotations

import pytest
import torch

from models.layers import MLP, CrossLayerV1, CrossLayerV2, CrossNetwork, WideLinear
from models.networks import DCN, WideAndDeep, build_model
from models.spec import FeatureSpec
from tests.fixtures.synthetic import make_splits, small_model_config


@pytest.mark.parametrize("case", range(30))
def test_cross_layer_with_zero_weights_returns_its_input(case: int) -> None:
    # A property over random shapes, ranks and inputs (seeded per case, so reproducible).
    rng = torch.Generator().manual_seed(case)
    batch, dim = (int(v) for v in torch.randint(1, 13, (2,), generator=rng))
    rank = None if case % 3 == 0 else int(torch.randint(1, 5, (1,), generator=rng))
    x0 = torch.randn(batch, dim, generator=rng)
    x = torch.randn(batch, dim, generator=rng)
    for layer in (CrossLayerV2(dim, rank), CrossLayerV1(dim)):
        with torch.no_grad():
            for p in layer.parameters():
                p.zero_()
        assert torch.equal(layer(x0, x), x)
    # ...and with non-zero weights it does not (the test can fail).
    assert not torch.equal(CrossLayerV2(dim, rank)(x0, x), x)


def test_cross_layer_v2_matches_its_formula() -> None:
    torch.manual_seed(0)
    x0, x = torch.randn(5, 6), torch.randn(5, 6)
    full = CrossLayerV2(6)
    w, b = full.linear.weight, full.linear.bias
    torch.testing.assert_close(full(x0, x), x0 * (x @ w.T + b) + x)
    low = CrossLayerV2(6, low_rank=2)
    u, v, b = low.up.weight, low.down.weight, low.up.bias
    assert sum(p.numel() for p in low.parameters()) == 2 * 6 * 2 + 6
    torch.testing.assert_close(low(x0, x), x0 * (x @ (u @ v).T + b) + x)
    v1 = CrossLayerV1(6)
    expected = x0 * (x @ v1.weight).unsqueeze(1) + v1.bias + x
    torch.testing.assert_close(v1(x0, x), expected)


def test_cross_network_stacks_layers_on_x0() -> None:
    torch.manual_seed(0)
    net = CrossNetwork(4, num_layers=3)
    x0 = torch.randn(3, 4)
    x = x0
    for layer in net.layers:
        x = layer(x0, x)
    torch.testing.assert_close(net(x0), x)
    with pytest.raises(ValueError, match="cross_type"):
        CrossNetwork(4, 1, cross_type="v3")


def test_wide_linear_sums_one_weight_per_id_and_mlp_shapes() -> None:
    wide = WideLinear([("a", 3), ("b", 2)])
    with torch.no_grad():
        wide.tables["a"].weight.copy_(torch.tensor([[1.0], [2.0], [3.0]]))
        wide.tables["b"].weight.copy_(torch.tensor([[10.0], [20.0]]))
        wide.bias.fill_(0.5)
    out = wide(torch.tensor([[0, 1], [2, 0]]))
    assert out.tolist() == [21.5, 13.5]
    assert MLP(7, [5, 3])(torch.randn(2, 7)).shape == (2, 3)
    assert MLP(7, [])(torch.randn(2, 7)).shape == (2, 7)


@pytest.fixture(scope="module")
def fitted():
    splits = make_splits(1200, seed=5)
    spec = FeatureSpec.fit(splits.schema, splits.train, small_model_config())
    return spec, spec.transform(splits.valid)


MODEL_VARIANTS = [
    ("wide_deep", {}),
    ("wide_deep", {"wide_deep.hidden_units": [], "wide_deep.dropout": 0.0}),
    ("dcn", {"dcn.structure": "parallel"}),
    ("dcn", {"dcn.structure": "stacked", "dcn.low_rank": 3}),
    ("dcn", {"dcn.cross_type": "v1", "dcn.dropout": 0.3}),
    ("dcn", {"dcn.wide": "ids"}),
    ("dcn", {"dcn.wide": "ids_and_crosses", "dcn.structure": "stacked"}),
]


@pytest.mark.parametrize(("kind", "overrides"), MODEL_VARIANTS)
def test_models_return_one_logit_per_row(fitted, kind: str, overrides: dict) -> None:
    spec, tensors = fitted
    torch.manual_seed(0)
    model = build_model(kind, spec, small_model_config(overrides))
    assert isinstance(model, WideAndDeep if kind == "wide_deep" else DCN)
    logits = model(tensors.sparse, tensors.dense, tensors.cross)
    assert logits.shape == (len(tensors),)
    assert torch.isfinite(logits).all()
    logits.sum().backward()  # every parameter is reachable from the output
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


@pytest.mark.parametrize(("kind", "overrides"), MODEL_VARIANTS)
def test_output_does_not_depend_on_batch_composition(fitted, kind: str, overrides: dict) -> None:
    spec, tensors = fitted
    torch.manual_seed(1)
    config = small_model_config({**overrides, "wide_deep.dropout": 0.5})
    model = build_model(kind, spec, config).eval()
    rows = torch.arange(40)
    with torch.no_grad():
        whole = model(tensors.sparse[rows], tensors.dense[rows], tensors.cross[rows])
        perm = torch.randperm(40, generator=torch.Generator().manual_seed(2))
        shuffled = model(tensors.sparse[perm], tensors.dense[perm], tensors.cross[perm])
        single = torch.cat(
            [
                model(tensors.sparse[i : i + 1], tensors.dense[i : i + 1], tensors.cross[i : i + 1])
                for i in range(40)
            ]
        )
        # The same rows surrounded by different company.
        other = torch.cat([rows[:10], torch.arange(100, 130)])
        mixed = model(tensors.sparse[other], tensors.dense[other], tensors.cross[other])
    torch.testing.assert_close(shuffled, whole[perm], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(single, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[:10], whole[:10], rtol=1e-5, atol=1e-6)


def test_embedding_tables_share_names_across_model_kinds(fitted) -> None:
    spec, _ = fitted
    config = small_model_config()
    wd = {
        n
        for n in build_model("wide_deep", spec, config).state_dict()
        if n.startswith("embeddings.")
    }
    dcn = {n for n in build_model("dcn", spec, config).state_dict() if n.startswith("embeddings.")}
    assert wd == dcn == {f"embeddings.tables.{c.name}.weight" for c in spec.categorical}


@pytest.mark.parametrize("mode", ["ids", "ids_and_crosses"])
def test_dcn_wide_part_adds_one_weight_per_id_to_the_logit(fitted, mode: str) -> None:
    spec, tensors = fitted
    torch.manual_seed(0)
    plain = build_model("dcn", spec, small_model_config())
    torch.manual_seed(0)
    model = build_model("dcn", spec, small_model_config({"dcn.wide": mode}))
    assert plain.wide is None and model.wide is not None
    wide_ids = [spec.categorical[i].name for i in spec.wide_sparse_index]
    crosses = [c.name for c in spec.crosses] if mode == "ids_and_crosses" else []
    assert list(model.wide.tables) == wide_ids + crosses
    # Zero-initialised: the same logits as the DCN without a wide part...
    args = (tensors.sparse, tensors.dense, tensors.cross)
    with torch.no_grad():
        torch.testing.assert_close(model(*args), plain(*args))
        # ...and a weight on one id moves exactly the rows holding that id, by that weight.
        column = spec.wide_sparse_index[0]
        token = int(tensors.sparse[0, column])
        model.wide.tables[wide_ids[0]].weight[token] = 0.75
        delta = model(*args) - plain(*args)
    hit = tensors.sparse[:, column] == token
    torch.testing.assert_close(delta[hit], torch.full((int(hit.sum()),), 0.75))
    torch.testing.assert_close(delta[~hit], torch.zeros(int((~hit).sum())))
    # The warm start matches its rows by id, as for Wide & Deep.
    assert f"wide.tables.{wide_ids[0]}.weight" in model.param_axes()


def test_unknown_kind_is_an_error(fitted) -> None:
    with pytest.raises(ValueError, match="unknown model kind 'gbdt'"):
        build_model("gbdt", fitted[0], small_model_config())
