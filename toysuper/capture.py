"""Running a training step: eagerly, or on CUDA captured once in a CUDA graph and replayed.

toysuper's steps have fixed shapes and no host sync, so on CUDA one call is recorded with torch.cuda.graph
and replayed, saving a few hundred kernel launches per step. A replay reads and writes the same memory:
parameters, optimiser state, counters and random streams (counter tensors; CUDA generators, registered on
torch < 2.14) carry over, and the host may change them in place between replays. The first WARMUP_STEPS steps
of a phase run eagerly on a side stream, as torch.cuda.graph requires. Each phase (e.g. BatchTopK's TopK
warm-up) has its own graph, all from one memory pool: they run one at a time on one stream, and only their
outputs outlive a replay. An uncapturable source trains eagerly (CaptureSkipped); a failed capture restores
the random streams, warns its first error (CaptureWarning) and trains eagerly from then on.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Callable, Sequence

import torch

CAPTURE = ("auto", "off")
WARMUP_STEPS = 3
TORCH_VERSION = tuple(int(part) for part in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
REGISTERS_GENERATORS = TORCH_VERSION < (2, 14)  # from 2.14 torch registers generators on first use


class CaptureWarning(RuntimeWarning):
    """A capture failed and training went on eagerly (an error under `pytest --device cuda`)."""


class CaptureSkipped(UserWarning):
    """The step was not captured because its source cannot be."""


def check_capture(capture: str, tf32: bool = False) -> str:
    if capture not in CAPTURE:
        raise ValueError(f"capture must be one of {CAPTURE}, got {capture!r}")
    if not isinstance(tf32, bool):
        raise TypeError(f"tf32 must be True or False, got {tf32!r}")
    return capture


def captures(capture: str, device: torch.device) -> bool:
    """Whether `capture` asks for a CUDA graph on `device` (a source may still rule it out: uncapturable_reason)."""
    return check_capture(capture) == "auto" and device.type == "cuda"


def uncapturable_reason(source, device: torch.device) -> str | None:
    """Why a step on `device` drawing from `source` cannot be captured, or None if it can.

    A source declares `capturable` (with `capture_reason` when False); one on another device than the
    step cannot be captured either (its batches cross devices through the host)."""
    if not getattr(source, "capturable", False):
        return getattr(source, "capture_reason", f"{type(source).__name__} does not declare capturable = True")
    if not _same_device(torch.device(source.device), device):
        return f"the source is on {source.device} and the step on {device}"
    return None


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether a and b name one device ("cuda" is the current CUDA device)."""
    def index(device):
        return torch.cuda.current_device() if device.index is None else device.index

    return a.type == b.type and (a.type != "cuda" or a.index == b.index or index(a) == index(b))


class StepRunner:
    """Calls `step()` -> dict of tensors (updated in place by a replay: read them before the next call):
    eagerly, or on CUDA from one CUDA graph per phase.

    streams: the random streams the step advances (torch.Generators, tensors advanced in place, or objects with
    get_state()/set_state()), restored after a failed capture. reset_gradients: drops the references into a
    graph's memory (the gradients), before each capture, after a failed one, and in close(). not_capturable:
    uncapturable_reason's answer. record(step, device, streams, pool) -> (graph, outputs): a test may fake it.
    `captured`: whether the steps after the warm-up ran from graphs; `failure`: why not, else None.
    """

    def __init__(self, step: Callable[[], dict], device: torch.device, capture: str = "auto", *,
                 streams: Sequence = (), reset_gradients: Callable[[], None] | None = None,
                 not_capturable: str | None = None, tf32: bool = False, record: Callable | None = None):
        self.step, self.device, self.tf32 = step, device, tf32
        self.streams = list(streams)
        self.reset_gradients = reset_gradients or (lambda: None)
        self.record = record or record_cuda_graph
        wanted = captures(capture, device)
        self.capturing = wanted and not_capturable is None
        self.captured = False
        self.failure = not_capturable if wanted else None
        if self.failure is not None:
            warnings.warn(f"not capturing the training step in a CUDA graph: {self.failure}; training eagerly",
                          CaptureSkipped, stacklevel=3)
        self.warm: dict[int, int] = {}
        self.graphs: dict[int, tuple] = {}  # phase -> (graph, outputs)

    def __call__(self, phase: int = 0) -> dict:
        if phase not in self.graphs:
            with tf32_matmuls(self.tf32):  # a replay runs the kernels chosen when it was captured
                if not self.capturing:
                    return self.step()
                if self.warm.get(phase, 0) < WARMUP_STEPS:
                    self.warm[phase] = self.warm.get(phase, 0) + 1
                    return self._on_side_stream()
                if not self._capture(phase):
                    return self.step()
        graph, outputs = self.graphs[phase]
        graph.replay()  # after a capture: the recorded step runs here
        return outputs

    def _capture(self, phase: int) -> bool:
        """Record phase's graph; on failure put the streams back, warn, and capture nothing from then on."""
        saved = [_save(stream) for stream in self.streams]
        self.reset_gradients()
        pool = next(iter(self.graphs.values()))[0].pool() if self.graphs else None
        step_errors = []

        def step() -> dict:
            try:
                return self.step()
            except Exception as error:  # the cause; ending the capture raises another error that masks it
                step_errors.append(error)
                raise

        try:
            self.graphs[phase] = self.record(step, self.device, self.streams, pool)
        except Exception as error:  # any failure to capture means: go on eagerly, from where we were
            for stream, state in zip(self.streams, saved):
                _restore(stream, state)
            self.close()
            error = step_errors[0] if step_errors else error
            self.capturing = self.captured = False
            self.failure = f"{type(error).__name__}: {error}"
            step_errors.clear()  # its traceback holds the failed graph: free it now, not at the next gc
            warnings.warn(f"capturing the training step in a CUDA graph failed, training eagerly instead: "
                          f"{self.failure}", CaptureWarning, stacklevel=3)
            return False
        self.captured = True
        return True

    def close(self) -> None:
        """Release the graphs' memory: drop the graphs, their outputs and the gradients pointing into it."""
        self.graphs.clear()
        self.reset_gradients()

    def _on_side_stream(self) -> dict:
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.step()
            torch.cuda.current_stream().wait_stream(side)
        return outputs


def record_cuda_graph(step: Callable[[], dict], device: torch.device, streams: Sequence, pool=None):
    """Record (not run) one call of `step` in a CUDA graph from `pool` (None: a new one) -> (graph, outputs).

    When cudaStreamEndCapture fails, capture_end raises before its clean-up: this puts back the current stream,
    the default generator and the allocator's capture (left open, every later capture fails an assert)."""
    with torch.cuda.device(device):
        index, stream = torch.cuda.current_device(), torch.cuda.current_stream()
        default_generator = torch.cuda.default_generators[index]
        saved = default_generator.clone_state()
        pool = torch.cuda.graph_pool_handle() if pool is None else pool
        graph = torch.cuda.CUDAGraph()
        if REGISTERS_GENERATORS:
            for generator in filter(_is_cuda_generator, streams):
                graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(graph, pool=pool):
                outputs = step()
        except Exception:
            torch.cuda.set_stream(stream)
            default_generator.graphsafe_set_state(saved)
            _end_allocator_capture(index, pool)
            raise
    return graph, outputs


def _end_allocator_capture(index: int, pool) -> None:
    """End the caching allocator's capture into `pool` and give back the reference it took, unless
    capture_end got as far as ending it (then the graph's own reset gives the reference back)."""
    end = getattr(torch._C, "_cuda_endAllocateToPool", None) or torch._C._cuda_endAllocateCurrentStreamToPool
    try:
        end(index, pool)
    except RuntimeError:  # "not currently recording to mempool_id": already ended
        return
    torch._C._cuda_releasePool(index, pool)


def _is_cuda_generator(stream) -> bool:
    return isinstance(stream, torch.Generator) and stream.device.type == "cuda"


def _save(stream):
    """A copy of a random stream's state (for a CUDA generator a new state object: restoring it also ends
    the capture mode a failed capture may leave it in)."""
    if _is_cuda_generator(stream):
        return stream.clone_state()
    return stream.get_state() if hasattr(stream, "get_state") else stream.detach().clone()


def _restore(stream, state) -> None:
    if _is_cuda_generator(stream):
        stream.graphsafe_set_state(state)
    elif hasattr(stream, "set_state"):
        stream.set_state(state)
    else:
        with torch.no_grad():
            stream.copy_(state)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool = True):
    """Inside: float32 matmuls on CUDA may use TF32 tensor cores (10-bit mantissa inputs, float32 sums);
    torch's global setting is put back on exit."""
    if not enabled:
        yield
        return
    matmul = torch.backends.cuda.matmul
    name, value = ("fp32_precision", "tf32") if TORCH_VERSION >= (2, 9) else ("allow_tf32", True)
    before = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, before)
