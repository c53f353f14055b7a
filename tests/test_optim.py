"""rl/optim.py's Adam: the same numbers as torch's clip_grad_norm_ + Adam(fused=True), to the bit."""

import torch
from torch import nn

from policygradex.rl.optim import Adam


def _pair(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    b = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def test_adam_matches_torch_bit_for_bit_with_clipping_annealing_and_missing_gradients():
    ours_net, torch_net = _pair(0)
    ours = Adam(ours_net.parameters(), lr=3e-3)
    reference = torch.optim.Adam(torch_net.parameters(), lr=3e-3, eps=1e-5, fused=True)
    for it in range(12):
        x = torch.randn(32, 5) * (10.0 if it % 3 == 0 else 0.1)  # some steps clipped, some not
        for net, opt in ((ours_net, ours), (torch_net, reference)):
            opt.param_groups[0]["lr"] = 3e-3 * (1 - it / 12)
            opt.zero_grad()
            out = net(x)
            # every fourth step the last layer gets no gradient: its moments and step count must stay put
            (out[:, 0].sum() if it % 4 == 1 else out.pow(2).mean()).backward()
            if it % 4 == 1:
                net[2].weight.grad = net[2].bias.grad = None
            if opt is ours:
                total = ours.clip_grad_norm_(0.5)
            else:
                reference_total = nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            opt.step()
        assert torch.equal(total, reference_total)
        for p, q in zip(ours_net.parameters(), torch_net.parameters(), strict=True):
            assert torch.equal(p, q), f"step {it}"
    assert not any(torch.equal(p, q) for p, q in zip(ours_net.parameters(), _pair(0)[0].parameters(), strict=True))


def test_adam_without_gradients_changes_nothing():
    net, _ = _pair(1)
    before = [p.clone() for p in net.parameters()]
    opt = Adam(net.parameters(), lr=1.0)
    assert float(opt.clip_grad_norm_(1.0)) == 0.0
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before, strict=True))
