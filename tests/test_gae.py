import torch

from policygradex.rl.rollout import compute_gae


def test_gae_matches_hand_computed_case():
    # One env, three steps, the episode ends after step 1.
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.6], [0.7]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = compute_gae(rewards, values, dones, torch.tensor([0.8]), gamma=0.9, gae_lambda=0.8)
    # t=2: 1 + 0.9*0.8 - 0.7 = 1.02;  t=1: 1 - 0.6 = 0.4 (episode ends);  t=0: 1 + 0.9*0.6 - 0.5 + 0.72*0.4
    assert torch.allclose(adv[:, 0], torch.tensor([1.328, 0.4, 1.02]), atol=1e-6)
    assert torch.allclose(ret, adv + values)


def test_gae_with_lambda_one_is_the_bootstrapped_discounted_return():
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.rand(6, 3, generator=gen), torch.rand(6, 3, generator=gen)
    last = torch.rand(3, generator=gen)
    _, ret = compute_gae(rewards, values, torch.zeros(6, 3), last, gamma=0.95, gae_lambda=1.0)
    expected = last.clone()
    for t in reversed(range(6)):
        expected = rewards[t] + 0.95 * expected
        assert torch.allclose(ret[t], expected, atol=1e-5)
