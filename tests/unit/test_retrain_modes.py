import torch

from prunekd.models import build_model
from prunekd.prune import prune
from prunekd.stages.retrain import MODES, starting_model


def pruned_mobilenet():
    torch.manual_seed(0)
    return prune(build_model("mobilenet_v1", 10, (1, 28, 28), 0.25), 0.5, "channels", "l1").model


def test_scratch_modes_start_from_reinitialised_weights_of_the_pruned_shape():
    pruned = pruned_mobilenet()
    for mode in ("scratch", "scratch_kd"):
        fresh = starting_model(pruned, mode, seed=3)
        assert fresh is not pruned and fresh.channels() == pruned.channels()
        after, before = fresh.state_dict(), pruned.state_dict()
        conv_weights = [k for k in before if k.endswith("weight") and before[k].ndim == 4]
        assert not any(torch.equal(after[k], before[k]) for k in conv_weights)
        again = starting_model(pruned, mode, seed=3).state_dict()  # seeded: reproducible
        assert all(torch.equal(after[k], again[k]) for k in after)
    other = starting_model(pruned, "scratch", seed=4).state_dict()
    assert not torch.equal(other["stem.0.weight"], starting_model(pruned, "scratch", seed=3).state_dict()["stem.0.weight"])


def test_pruned_modes_keep_the_pruned_weights():
    pruned = pruned_mobilenet()
    assert starting_model(pruned, "ft", 0) is pruned and starting_model(pruned, "kd", 0) is pruned
    assert {m for m, mode in MODES.items() if mode.from_scratch} == {"scratch", "scratch_kd"}
