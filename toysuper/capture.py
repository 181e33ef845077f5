"""Running a training step: eagerly, or on CUDA captured once in a CUDA graph and replayed.

A step (draw the batch, forward, loss, backward, optimiser, bookkeeping) is a few hundred small
kernels; on a GPU each launch costs several µs and the whole step a few hundred µs of launches
alone (a plain TopK step on an H200: 1.8 ms eager, 0.29 ms captured; ../shared/gpu/
measured-2026-11-29.md). The step functions of toysuper have shapes set by the configuration and
never read a value back to the host, so on CUDA one call can be recorded with torch.cuda.graph and
replayed for every later step: the replay reads and writes the same memory, so the parameters,
optimiser state and counters the step updates in place carry over from one replay to the next, and
the host may change them in place between replays (resampling, restoring after a NaN).

Random numbers come from the run's own generators, registered with the graph
(CUDAGraph.register_generator_state), so each replay draws fresh numbers and equal seeds give equal
runs. The first WARMUP_STEPS steps run eagerly on a side stream, as torch.cuda.graph requires: they
create the optimiser's state and let cuBLAS choose its kernels outside the capture.

`capture="auto"` captures on CUDA, where it pays, and runs eagerly elsewhere (on a CPU a launch
costs nothing and a graph saves nothing); `capture="off"` runs eagerly everywhere. If capturing
fails, a warning names the reason and training goes on eagerly.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

CAPTURE = ("auto", "off")
WARMUP_STEPS = 3


def check_capture(capture: str) -> str:
    if capture not in CAPTURE:
        raise ValueError(f"capture must be one of {CAPTURE}, got {capture!r}")
    return capture


def captures(capture: str, device: torch.device) -> bool:
    """Whether a step on `device` is captured in a CUDA graph."""
    return check_capture(capture) == "auto" and device.type == "cuda"


class StepRunner:
    """Calls `step()` -> dict of tensors: eagerly, or on CUDA from one CUDA graph after WARMUP_STEPS.

    Args:
        step: one training step; it must update its state in place and return tensors (the replay
            overwrites the same tensors every time, so read them before the next call).
        device: where the step runs.
        capture: "auto" or "off" (see the module docstring).
        generators: every torch.Generator the step draws from (registered with the graph).
        before_capture: called once when capture is about to start (e.g. to drop gradients so that
            backward allocates them from the graph's memory).
    """

    def __init__(self, step: Callable[[], dict], device: torch.device, capture: str = "auto",
                 generators: list[torch.Generator] = (), before_capture: Callable[[], None] | None = None):
        self.step = step
        self.capturing = captures(capture, device)
        self.generators = list(generators)
        self.before_capture = before_capture
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: dict | None = None
        self.failure: str | None = None
        """Why capturing failed, when it did."""

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, phase: int | None = None) -> dict:
        """One step; `phase` (the recipe's, TrainState.phase) is not used yet: one graph serves every phase."""
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if not self.capturing:
            return self.step()
        if self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            return self._on_side_stream()
        try:
            self._capture()
        except Exception as error:  # any failure to capture means: go on eagerly
            self.graph, self.capturing = None, False
            self.failure = f"{type(error).__name__}: {error}"
            warnings.warn(f"capturing the training step in a CUDA graph failed, training eagerly instead: "
                          f"{self.failure}", RuntimeWarning, stacklevel=2)
            if self.before_capture is not None:
                self.before_capture()  # nothing may point into the abandoned graph's memory
            return self.step()
        self.graph.replay()
        return self.outputs

    def _on_side_stream(self) -> dict:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outputs = self.step()
        torch.cuda.current_stream().wait_stream(side)
        return outputs

    def _capture(self) -> None:
        if self.before_capture is not None:
            self.before_capture()
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            outputs = self.step()  # recorded, not run: the first replay is this step
        self.graph, self.outputs = graph, outputs
