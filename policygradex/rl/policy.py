"""Task-conditioned actor-critic: separate networks for pi(a|s, task) and V(s, task), as in CleanRL's PPO.

Four architectures: ``mlp`` (the default, and always theta*'s), ``softmod``, Soft Modularization (Yang et
al. 2020), ``paco``, parameter-compositional (Sun et al. 2022, rl/paco.py), and ``care``, a mixture of encoders
attending to the task's context (Sodhani et al. 2021, rl/care.py). The mlp actor is a plain
``nn.Sequential`` of ``Linear`` and ``Tanh`` layers: the gradient-feature code walks its ``Linear`` layers to
build per-sample gradients without materialising them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from policygradex.registry import Registry
from policygradex.rl.care import CareNet
from policygradex.rl.paco import paco_net
from policygradex.tasks.family import ActionSpace


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class Tanh(nn.Module):
    """tanh, as 2 sigmoid(2x) - 1 on large batches: this CPU build of torch computes ``tanh`` element by element
    (108 us for a 640 x 64 PPO minibatch against 21 us for the sigmoid form, a quarter of an update's time),
    while small batches (rollout steps) are faster with ``tanh`` itself. Equal to ``torch.tanh`` within 2e-7."""

    LARGE = 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() < self.LARGE or x.is_cuda:
            return torch.tanh(x)
        return torch.sigmoid(x + x).mul(2).sub_(1)


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer(n_in, width, np.sqrt(2)), Tanh()]
        n_in = width
    layers.append(_layer(n_in, n_out, out_gain))
    return nn.Sequential(*layers)


Layers = list[tuple[torch.Tensor, torch.Tensor]]
"""(weight, bias) of each Linear layer of an ``mlp``, input to output."""

Trace = list[tuple[torch.Tensor, "torch.Tensor | None"]]
"""Per Linear layer of an ``mlp_forward``: (its input, sigmoid(2z) where the Tanh before it took the sigmoid
form, else None): what a hand-written backward pass reads (rl/ppo_grad.py)."""


def mlp_layers(net: nn.Module) -> Layers | None:
    """The (weight, bias) pairs of ``net`` when it is Linear, (Tanh, Linear)*, as ``mlp`` builds it; else None."""
    if not isinstance(net, nn.Sequential):
        return None
    modules = list(net)
    if len(modules) % 2 == 0 or any(type(m) is not (nn.Linear if i % 2 == 0 else Tanh) for i, m in enumerate(modules)):
        return None
    linears: list[nn.Linear] = modules[::2]  # type: ignore[assignment]
    return None if any(m.bias is None for m in linears) else [(m.weight, m.bias) for m in linears]


def mlp_forward(layers: Layers, x: torch.Tensor, trace: Trace | None = None) -> torch.Tensor:
    """``mlp``'s output by the same ops as its modules, without the module calls (8 of the 20 us of a 64x64
    actor's forward on 8 rows). With ``trace``, what the backward pass reads is appended to it (``Trace``)."""
    h, s = x, None
    for i, (w, b) in enumerate(layers):
        if trace is not None:
            trace.append((h, s))
        h = nn.functional.linear(h, w, b)
        if i < len(layers) - 1:
            if h.numel() < Tanh.LARGE or h.is_cuda:
                h, s = torch.tanh(h), None
            else:
                s = torch.sigmoid(h + h)
                h = s.mul(2).sub_(1)
    return h


class SoftModularNet(nn.Module):
    """Soft Modularization (Yang et al. 2020): layers of ``n_modules`` small modules whose outputs are mixed,
    layer to layer, by a routing network driven by the state and a task embedding.

    Input is ``[obs, one-hot task]`` (what ``ActorCritic.inputs`` builds). With f = ReLU(W_s s) and a task
    embedding e = W_e onehot, the router reads r = ReLU(W_r (f * e)) and emits, for each layer l >= 1, routing
    weights p^l = softmax over the previous layer's modules (an m x m matrix per sample). Module j of layer l
    sees sum_i p^l_ji h^{l-1}_i; the output head reads the mean of the last layer's modules.
    """

    def __init__(self, obs_dim: int, n_tasks: int, n_out: int, width: int, n_layers: int, out_gain: float,
                 n_modules: int = 4) -> None:
        super().__init__()
        self.obs_dim, self.n_modules, self.n_layers = obs_dim, n_modules, n_layers
        self.state = _layer(obs_dim, width, np.sqrt(2))
        self.embed = nn.Linear(n_tasks, width, bias=False)
        self.router = _layer(width, width, np.sqrt(2))
        self.routes = nn.ModuleList(_layer(width, n_modules * n_modules, 0.01) for _ in range(n_layers - 1))
        # modules[l] holds the weights of layer l's m modules as one (m, width, width) tensor
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(n_modules, width, width)) for _ in range(n_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n_modules, width)) for _ in range(n_layers))
        for w in self.weights:
            for j in range(n_modules):
                nn.init.orthogonal_(w.data[j], np.sqrt(2))
        self.head = _layer(width, n_out, out_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        obs, task = x[..., :self.obs_dim], x[..., self.obs_dim:]
        f = torch.relu(self.state(obs))
        r = torch.relu(self.router(f * self.embed(task)))
        h = torch.relu(torch.einsum("...i,mio->...mo", f, self.weights[0]) + self.biases[0])  # (..., m, width)
        for layer in range(1, self.n_layers):
            p = self.routes[layer - 1](r).unflatten(-1, (self.n_modules, self.n_modules)).softmax(-1)
            mixed = p @ h  # (..., m, m) @ (..., m, width): module j's input is sum_i p_ji h_i
            h = torch.relu(torch.einsum("...mi,mio->...mo", mixed, self.weights[layer]) + self.biases[layer])
        return self.head(h.mean(-2))


def mlp_net(obs_dim: int, n_tasks: int, task_conditioned: bool, hidden: tuple[int, ...], n_out: int,
            out_gain: float, context: torch.Tensor | None = None) -> nn.Module:
    """An actor or critic MLP on the observation, with the one-hot task id appended when task-conditioned."""
    return mlp(obs_dim + (n_tasks if task_conditioned else 0), hidden, n_out, out_gain)


def softmod_net(obs_dim: int, n_tasks: int, task_conditioned: bool, hidden: tuple[int, ...], n_out: int,
                out_gain: float, context: torch.Tensor | None = None) -> nn.Module:
    """A Soft Modularization network: one layer of modules per entry of ``hidden`` (all of its first width)."""
    if not task_conditioned:
        raise ValueError("Soft Modularization routes by task: it needs a task-conditioned policy")
    return SoftModularNet(obs_dim, n_tasks, n_out, hidden[0], len(hidden), out_gain)


def care_net(obs_dim: int, n_tasks: int, task_conditioned: bool, hidden: tuple[int, ...], n_out: int,
             out_gain: float, context: torch.Tensor | None = None) -> nn.Module:
    """A CARE network: encoders and context embedding of the first hidden width, a head MLP of the others on
    [representation, embedding]; without a context table, the one-hot task id (a learned embedding)."""
    if not task_conditioned:
        raise ValueError("CARE attends to the task's context: it needs a task-conditioned policy")
    table = context if context is not None else torch.eye(n_tasks)
    return CareNet(obs_dim, table, hidden[0], mlp(2 * hidden[0], hidden[1:], n_out, out_gain))


Arch = Literal["mlp", "softmod", "paco", "care"]
NetBuilder = Callable[[int, int, bool, tuple[int, ...], int, float, "torch.Tensor | None"], nn.Module]
"""(obs_dim, n_tasks, task_conditioned, hidden_sizes, n_out, out_gain, context) -> the actor's or the critic's
network, reading ``ActorCritic.inputs`` (the observation, then the one-hot task id when task-conditioned);
``context`` (n_tasks, c) is the tasks' metadata, which only networks that read it (CARE) use."""

# The networks ActorCritic(arch=...) builds. Adding one: its module (a NetBuilder), one line here, and its name
# in the Arch Literal above (a trainer that uses it passes arch= to train_ppo, see rl/trainers.py).
ARCHS: Registry[NetBuilder] = Registry("arch", {
    "mlp": mlp_net,
    "softmod": softmod_net,
    "paco": paco_net,
    "care": care_net,
})


class ActorCritic(nn.Module):
    """pi(a|s, task) and V(s, task) for Discrete (categorical) or Box (diagonal Gaussian) actions.

    ``arch`` picks the network of actor and critic (``ARCHS``); ``context`` (n_tasks, c), the tasks' metadata,
    is read by the networks that attend to it (CARE) and saved with them.
    """

    def __init__(self, obs_dim: int, action_space: ActionSpace, n_tasks: int,
                 hidden_sizes: tuple[int, ...] = (64, 64), task_conditioned: bool = True, arch: Arch = "mlp",
                 context: np.ndarray | torch.Tensor | None = None) -> None:
        super().__init__()
        build = ARCHS.get(arch)
        self.obs_dim, self.n_tasks, self.task_conditioned = obs_dim, n_tasks, task_conditioned
        self.hidden_sizes, self.arch = tuple(hidden_sizes), arch
        table = None if context is None else torch.as_tensor(np.asarray(context), dtype=torch.float32)
        if table is not None and table.shape[0] != n_tasks:
            raise ValueError(f"context has {table.shape[0]} rows for {n_tasks} tasks")
        self.context_dim = None if table is None else int(table.shape[1])
        self.action_space = action_space
        self.continuous = isinstance(action_space, gym.spaces.Box)
        if isinstance(action_space, gym.spaces.Box):
            n_out = int(np.prod(action_space.shape))
        else:
            n_out = int(action_space.n)
        self.actor = build(obs_dim, n_tasks, task_conditioned, self.hidden_sizes, n_out, 0.01, table)
        self.critic = build(obs_dim, n_tasks, task_conditioned, self.hidden_sizes, 1, 1.0, table)
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(n_out))

    def forward(self, obs: torch.Tensor, task: torch.Tensor) -> Distribution:
        """pi(.|s, task); ``torch.func.functional_call`` calls this with adapted parameters (MAML)."""
        return self.policy(obs, task)

    def inputs(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Observation with a one-hot task id appended (when task-conditioned)."""
        if not self.task_conditioned:
            return obs
        one_hot = (task[..., None] == torch.arange(self.n_tasks)).to(obs.dtype)  # vmap-safe, unlike F.one_hot
        return torch.cat([obs, one_hot], dim=-1)

    def distribution(self, actor_out: torch.Tensor) -> Distribution:
        if self.continuous:
            return Normal(actor_out, self.log_std.exp().expand_as(actor_out), validate_args=False)
        return Categorical(logits=actor_out, validate_args=False)

    def log_prob(self, dist: Distribution, action: torch.Tensor) -> torch.Tensor:
        lp = dist.log_prob(action)
        return lp.sum(-1) if self.continuous else lp

    def policy(self, obs: torch.Tensor, task: torch.Tensor) -> Distribution:
        return self.distribution(self.actor(self.inputs(obs, task)))

    def value(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.critic(self.inputs(obs, task)).squeeze(-1)

    def act(self, obs: torch.Tensor, task: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        dist = self.policy(obs, task)
        if deterministic:
            return dist.probs.argmax(-1) if isinstance(dist, Categorical) else dist.mean
        return dist.sample()

    def sample(self, obs: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(action, log pi(action|s, task)) sampled from the policy."""
        return self.sampler()(obs, task)

    def sampler(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``sample`` for a rollout, whose parameters stay put: the mlp actor's layers looked up once (6 us a
        lookup) and called without modules, and no ``Categorical`` built per step."""
        layers = mlp_layers(self.actor)
        actor = self.actor if layers is None else functools.partial(mlp_forward, layers)

        def sample(obs: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = actor(self.inputs(obs, task))
            if self.continuous:
                dist = self.distribution(logits)
                action = dist.sample()
                return action, self.log_prob(dist, action)
            log_p = logits.log_softmax(-1)
            # Gumbel-max: argmax(log p - log E), E ~ Exp(1), is a draw from p, in half of torch.multinomial's time
            noise = torch.empty_like(log_p).exponential_().clamp_min_(1e-30).log_()
            action = (log_p - noise).argmax(-1, keepdim=True)
            return action.squeeze(-1), log_p.gather(-1, action).squeeze(-1)
        return sample

    def evaluate_actions(self, x: torch.Tensor,
                         action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log pi(action|.), entropy of pi(.|.), V) on prepared ``inputs`` x: what a PPO minibatch needs, the task
        encoding built once per update and no distribution object per minibatch."""
        value = self.critic(x).squeeze(-1)
        if self.continuous:
            dist = self.distribution(self.actor(x))
            return self.log_prob(dist, action), dist.entropy().sum(-1), value
        log_p = self.actor(x).log_softmax(-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        return log_p.gather(-1, action[:, None]).squeeze(-1), entropy, value

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """The action as the env takes it (Gaussian samples clipped to the Box bounds)."""
        a = action.cpu().numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            return np.clip(a, self.action_space.low, self.action_space.high)
        return a

    def spec(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "n_tasks": self.n_tasks, "hidden_sizes": list(self.hidden_sizes),
                "task_conditioned": self.task_conditioned, "arch": self.arch, "context_dim": self.context_dim}


def save_policy(policy: ActorCritic, path) -> None:
    from policygradex.io import atomic_torch_save

    atomic_torch_save({"spec": policy.spec(), "state_dict": policy.state_dict()}, path)


def load_policy(path, action_space: ActionSpace) -> ActorCritic:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    spec = blob["spec"]
    dim = spec.get("context_dim")  # the table itself comes back with the state dict
    policy = ActorCritic(spec["obs_dim"], action_space, spec["n_tasks"], tuple(spec["hidden_sizes"]),
                         spec["task_conditioned"], spec.get("arch", "mlp"),
                         None if dim is None else np.zeros((spec["n_tasks"], dim)))
    policy.load_state_dict(blob["state_dict"])
    return policy
