"""Each pruning criterion removes the filters its definition ranks lowest (crafted weights)."""

import pytest
import torch

from prunekd.models import build_model
from prunekd.prune import CRITERIA, prune


def lenet_with_first_layer(filters: list[torch.Tensor]) -> torch.nn.Module:
    """LeNet-5 whose six first-layer filters (1x5x5) are the given ones; the rest is random."""
    torch.manual_seed(0)
    model = build_model("lenet5", 10, (1, 28, 28))
    with torch.no_grad():
        model.features[0].weight.copy_(torch.stack(filters).view(6, 1, 5, 5))
    return model


def kept_filters(model: torch.nn.Module, criterion: str) -> list[torch.Tensor]:
    return list(prune(model, 0.5, "channels", criterion).model.features[0].weight.view(-1, 25))


def spike(value: float) -> torch.Tensor:  # one weight: L1 = L2 = value
    t = torch.zeros(25)
    t[12] = value
    return t


def flat(value: float) -> torch.Tensor:  # 25 equal weights: L1 = 25 v, L2 = 5 v
    return torch.full((25,), value)


# L1 and L2 disagree: spikes have the smaller L1 (3 < 5), flats the smaller L2 (1 < 3).
SPIKES_AND_FLATS = [spike(3.0), flat(0.2), spike(3.1), flat(0.21), spike(3.2), flat(0.22)]


def test_l1_keeps_the_filters_with_the_largest_l1_norm():
    kept = kept_filters(lenet_with_first_layer(SPIKES_AND_FLATS), "l1")
    assert sorted(round(f.abs().sum().item(), 3) for f in kept) == [5.0, 5.25, 5.5]


def test_l2_keeps_the_filters_with_the_largest_l2_norm():
    kept = kept_filters(lenet_with_first_layer(SPIKES_AND_FLATS), "l2")
    assert sorted(round(f.norm().item(), 3) for f in kept) == [3.0, 3.1, 3.2]


def test_fpgm_removes_the_filters_nearest_the_geometric_median():
    # Filters all-v for v in {1, 2, 3, 4, 6, 10}: the summed distance to the others is smallest
    # for 3 and 4 (14 each), then 2 (16); FPGM removes those, L1 would remove 1, 2 and 3.
    values = [6.0, 3.0, 10.0, 1.0, 4.0, 2.0]
    kept = kept_filters(lenet_with_first_layer([flat(v) for v in values]), "fpgm")
    assert sorted(round(f[0].item(), 3) for f in kept) == [1.0, 6.0, 10.0]


def test_bn_scale_keeps_the_channels_with_the_largest_batchnorm_gamma():
    torch.manual_seed(0)
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.25)
    bn = model.stem[1]
    gammas = torch.tensor([0.5, -2.0, 0.1, 3.0, -0.05, 1.0, 0.2, 4.0])  # |gamma| ranks 7, 3, 1, 5 on top
    with torch.no_grad():
        bn.weight.copy_(gammas)
        # Large, equal filter norms: a magnitude criterion could not tell these channels apart.
        model.stem[0].weight.fill_(1.0)
    pruned = prune(model, 0.5, "channels", "bn_scale").model
    assert sorted(pruned.stem[1].weight.abs().tolist()) == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_random_is_seeded_and_differs_between_seeds():
    torch.manual_seed(0)
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.25)
    runs = [prune(model, 0.5, "channels", "random", seed=seed).model for seed in (0, 0, 1)]
    weights = [[p.detach().clone() for p in m.parameters()] for m in runs]
    assert all(torch.equal(a, b) for a, b in zip(weights[0], weights[1]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], weights[2]))
    assert runs[0].channels() == runs[2].channels()  # same shape, other filters


def test_every_criterion_is_registered_and_valid_in_params():
    from prunekd.config import CRITERIA as NAMES

    assert set(CRITERIA) == set(NAMES) == {"l1", "l2", "random", "bn_scale", "fpgm"}


def test_l1_in_mobilenet_ranks_the_pointwise_filters_that_produce_the_channels():
    """Torch-Pruning roots these groups at the next depthwise conv; the score must still come
    from the pointwise filters (Li et al.'s own-filter norm), not the depthwise kernels."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.25)
    pointwise, depthwise = model.features[0][1][0], model.features[1][0][0]
    n = pointwise.out_channels
    scales = torch.randperm(n).float() + 1  # distinct norms, shuffled
    with torch.no_grad():
        pointwise.weight.copy_(torch.ones_like(pointwise.weight) * scales.view(-1, 1, 1, 1))
        depthwise.weight.copy_(torch.ones_like(depthwise.weight) / scales.view(-1, 1, 1, 1))  # the opposite order
    pruned = prune(model, 0.5, "channels", "l1").model
    kept = pruned.features[0][1][0].weight.view(pruned.features[0][1][0].out_channels, -1)[:, 0]
    assert sorted(kept.tolist()) == sorted(scales.sort(descending=True).values[: len(kept)].tolist())
