import pytest
import torch

from alexnet import AlexNetError, TwoTowerAlexNet, build_model


def test_same_logits_as_grouped_model_on_cpu_cpu():
    grouped = build_model("paper").eval()
    towers = TwoTowerAlexNet.from_grouped(grouped, devices=("cpu", "cpu")).eval()
    x = torch.randn(3, 3, 227, 227) * 50
    with torch.no_grad():
        torch.testing.assert_close(towers(x), grouped(x), rtol=1e-5, atol=1e-5)


def test_round_trip_is_exact_and_gradients_reach_both_towers():
    towers = TwoTowerAlexNet(num_classes=10, init="paper")
    back = towers.to_grouped()
    again = TwoTowerAlexNet.from_grouped(back)
    for (n, p), (_, q) in zip(towers.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert back.layer("conv4").bias[0] == 1.0  # the paper's init went through
    towers.train()
    towers(torch.randn(2, 3, 227, 227)).sum().backward()
    for tower in (towers.tower_a, towers.tower_b):
        for name, p in tower.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_towers_hold_half_the_kernels():
    towers = TwoTowerAlexNet()
    assert towers.tower_a.conv1.out_channels == 48 and towers.tower_b.conv5.out_channels == 128
    assert sum(p.numel() for p in towers.parameters()) == 60_965_224


def test_refuses_a_model_that_is_not_the_grouped_paper_net():
    with pytest.raises(AlexNetError, match="converts only AlexNet\\('paper'\\) with groups=2"):
        TwoTowerAlexNet.from_grouped(build_model("paper", groups=1))
    with pytest.raises(AlexNetError, match="LRN before the pools"):
        TwoTowerAlexNet.from_grouped(build_model("paper", lrn_position="after-pool"))
    with pytest.raises(AlexNetError, match="needs two devices"):
        TwoTowerAlexNet(devices=("cpu",))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="needs a CUDA device")
def test_runs_across_devices():
    second = "cuda:1" if torch.cuda.device_count() > 1 else "cpu"
    grouped = build_model("paper").eval()
    towers = TwoTowerAlexNet.from_grouped(grouped, devices=("cuda:0", second)).eval()
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        torch.testing.assert_close(towers(x).cpu(), grouped(x), rtol=1e-4, atol=1e-4)
