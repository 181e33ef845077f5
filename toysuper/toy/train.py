"""Training toy models: every instance in one batched step, captured in a CUDA graph on CUDA.

The paper's setup (Elhage et al. 2022, "Toy Models of Superposition"): fresh samples of the features
every step, the importance-weighted squared error, AdamW. The step (draw, loss, backward, AdamW,
the running sum of the last losses) has fixed shapes and no host sync, so on CUDA it is captured
once and replayed (toysuper/capture.py); the loop reads the loss back every `log_every` steps only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..capture import StepRunner, captures, check_capture
from ..checks import positive_float, positive_int
from ..devices import instance_generators
from ..progress import progress_bar
from ..threads import with_threads
from ..truth.distribution import FeatureDistribution
from .model import ToyModel, check_dist, importance_weighted_mse


@dataclass
class ToyTrainResult:
    """What training a toy model leaves behind."""

    final_loss: torch.Tensor
    """Loss per instance averaged over the last 1% of steps (at least one), shape (inst,)."""
    loss_history: torch.Tensor
    """Loss per instance at each logged step, shape (n_logs, inst)."""
    logged_steps: list[int]
    """The step index of each row of loss_history."""
    captured: bool = False
    """Whether the step ran from a CUDA graph."""
    capture_failure: str | None = None
    """Why it did not where it would have (the first error of a failed capture), else None."""


@with_threads
def train_toy_model(model: ToyModel, dist: FeatureDistribution, steps: int = 10_000, batch_size: int = 1024,
                    lr: float = 1e-3, seed=0, weight_decay: float = 1e-2, log_every: int = 100,
                    quiet: bool = False, capture: str = "auto", tf32: bool = False, *,
                    threads: int | None = None) -> ToyTrainResult:
    """Train every instance of `model` on samples from `dist` with AdamW (the paper's setup).

    Data are drawn fresh each step on the model's device, one stream per instance: `seed` is an int s
    (instance i reads the stream seeded s + i) or one int per instance. `capture`: "auto" replays the step from a
    CUDA graph on CUDA, "off" runs it eagerly (toysuper/capture.py); gradients are None afterwards. `tf32`: on
    CUDA, float32 matmuls may use TF32 while a step runs. `threads`: torch's CPU threads during the call
    (threads.torch_threads). Raises ValueError if the loss becomes NaN, leaving the model's weights as they were
    at the last good check.
    """
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    lr = positive_float("lr", lr)
    log_every = positive_int("log_every", log_every)
    check_capture(capture, tf32)
    check_dist(model, dist)
    device = model.W.device
    dist = dist if dist.device == device else dist.to(device)
    generator = instance_generators(seed, device, model.n_instances)  # one stream per instance
    # the fused kernel updates a parameter in one pass; capturable keeps the step count on the device for a graph
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                  fused=device.type in ("cpu", "cuda"), capturable=captures(capture, device))
    tail_start = steps - max(1, steps // 100)
    step = torch.zeros((), device=device)  # steps done, on the device
    tail_sum = torch.zeros(model.n_instances, device=device)  # the losses of steps >= tail_start, for final_loss

    def one_step() -> torch.Tensor:
        x = dist.sample(batch_size, generator)
        per_instance = importance_weighted_mse(model, x, dist.importance)
        optimizer.zero_grad(set_to_none=True)
        per_instance.sum().backward()  # instances are independent: their losses simply add
        optimizer.step()
        with torch.no_grad():
            tail_sum.add_(per_instance * (step >= tail_start))
            step.add_(1)
        return per_instance.detach()

    run = StepRunner(one_step, device, capture, streams=[generator.counter], tf32=tf32,
                     reset_gradients=lambda: optimizer.zero_grad(set_to_none=True))
    history, logged_steps = [], []
    last_good = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        for index in progress_bar(range(steps), desc="toy model", quiet=quiet):
            losses = run()
            if index % log_every == 0 or index == steps - 1:
                losses = losses.cpu()
                if not torch.isfinite(losses).all():
                    model.load_state_dict(last_good)
                    raise ValueError(f"toy-model loss became NaN/inf at step {index} (lr={lr}); weights restored to "
                                     f"step {logged_steps[-1] if logged_steps else 0}")
                last_good = {k: v.detach().clone() for k, v in model.state_dict().items()}
                history.append(losses)
                logged_steps.append(index)
    finally:
        run.close()  # release the graph's memory
    final_loss = (tail_sum / (steps - tail_start)).cpu()
    return ToyTrainResult(final_loss, torch.stack(history), logged_steps, run.captured, run.failure)
