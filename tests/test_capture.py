"""What the CPU can check of the CUDA-graph runner (toysuper/capture.py): the runner is given a CUDA
device and a fake `record`, so its decisions (skip, warm up, capture per phase, fall back) run for real
while nothing touches a GPU. tests/test_cuda.py checks real captures on a GPU."""

import warnings

import pytest
import torch

from toysuper import SAE, DictionarySource, FeatureDistribution, random_directions, train_sae
from toysuper.capture import (WARMUP_STEPS, CaptureSkipped, CaptureWarning, StepRunner, tf32_matmuls,
                              uncapturable_reason)
from toysuper.sources import SAELensWorld
from device import DEVICE

CUDA = torch.device("cuda")  # only named: no CUDA call is made with it here


class FakeGraph:
    def __init__(self, step, pool):
        self.step, self.given_pool, self.replays = step, pool, 0

    def replay(self):
        self.replays += 1
        self.step()

    def pool(self):
        return ("pool of", id(self))


class Streams:
    """A step with a CPU generator and a counter tensor as its random streams; it fails while "capturing"."""

    def __init__(self):
        self.generator = torch.Generator().manual_seed(7)
        self.counter = torch.zeros((), dtype=torch.int64)
        self.capturing = False

    def step(self) -> dict:
        x = torch.rand(4, generator=self.generator)
        self.counter += 1
        if self.capturing:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        return {"x": x, "counter": self.counter.clone()}


@pytest.fixture
def eager_warm_up(monkeypatch):
    monkeypatch.setattr(StepRunner, "_on_side_stream", lambda self: self.step())  # no CUDA stream on a CPU


def test_a_failed_capture_restores_the_streams_warns_its_first_error_and_trains_eagerly(eager_warm_up):
    streams, resets, records = Streams(), [], []

    def failing_record(step, device, given_streams, pool):
        records.append(given_streams)
        streams.capturing = True
        try:
            step()  # draws and counts (as a capture would record), then fails part-way
        except RuntimeError as error:  # as torch.cuda.graph's exit does: capture_end fails too
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture") from error
        finally:
            streams.capturing = False

    runner = StepRunner(streams.step, CUDA, streams=[streams.generator, streams.counter],
                        reset_gradients=lambda: resets.append(1), record=failing_record)
    with pytest.warns(CaptureWarning) as caught:
        outputs = [runner() for _ in range(WARMUP_STEPS + 3)]
    assert len(caught) == 1 and "not permitted when stream is capturing" in str(caught[0].message)
    assert "previous error" not in str(caught[0].message) and "previous error" not in runner.failure
    assert not runner.captured and len(records) == 1
    assert records[0][0] is streams.generator and records[0][1] is streams.counter
    # every call ran one step, and the streams went on from where the failed capture found them
    reference = torch.Generator().manual_seed(7)
    for index, out in enumerate(outputs):
        assert int(out["counter"]) == index + 1
        assert torch.equal(out["x"], torch.rand(4, generator=reference))
    assert resets == [1, 1]  # before the capture, and after it failed


def test_a_source_that_cannot_be_captured_is_said_once_and_runs_eagerly():
    calls = []
    with pytest.warns(CaptureSkipped, match="reads a seed back") as caught:
        runner = StepRunner(lambda: calls.append(1) or {}, CUDA, not_capturable=SAELensWorld.capture_reason,
                            record=lambda *args: pytest.fail("must not capture"))
        for _ in range(WARMUP_STEPS + 5):
            runner()
    assert len(caught) == 1 and len(calls) == WARMUP_STEPS + 5
    assert not runner.captured and runner.failure == SAELensWorld.capture_reason


def test_why_a_source_cannot_be_captured():
    directions = random_directions(8, 4, seed=0)[0]
    source = DictionarySource(directions, FeatureDistribution(8, 0.1))
    assert uncapturable_reason(source, torch.device("cpu")) is None
    assert "source is on cpu" in uncapturable_reason(source, CUDA)  # batches would cross devices
    source.device = torch.device("cuda", 1)
    assert uncapturable_reason(source, torch.device("cuda", 1)) is None
    assert "source is on cuda:1" in uncapturable_reason(source, torch.device("cuda", 0))
    assert not SAELensWorld.capturable and "host" in uncapturable_reason(SAELensWorld, CUDA)

    class Undeclared:
        device = CUDA

    assert "capturable = True" in uncapturable_reason(Undeclared(), CUDA)
    with warnings.catch_warnings():  # on the CPU nothing is captured, so nothing is said
        warnings.simplefilter("error")
        StepRunner(lambda: {}, torch.device("cpu"), not_capturable="any reason")()


def test_each_phase_has_its_own_graph_from_one_pool_after_its_own_warm_up(eager_warm_up):
    steps, graphs = [], []

    def record(step, device, streams, pool):
        graphs.append(FakeGraph(step, pool))
        return graphs[-1], {"graph": len(graphs) - 1}

    runner = StepRunner(lambda: steps.append(1) or {"eager": True}, CUDA, record=record)
    phases = [0] * (WARMUP_STEPS + 3) + [1] * (WARMUP_STEPS + 2) + [0]
    outputs = [runner(phase) for phase in phases]
    assert len(graphs) == 2 and set(runner.graphs) == {0, 1} and runner.captured
    assert graphs[0].given_pool is None and graphs[1].given_pool == graphs[0].pool()  # one shared pool
    # phase 0: warm-up eagerly, capture (the first replay is that step), replay; phase 1 likewise
    expected = [{"eager": True}] * WARMUP_STEPS + [{"graph": 0}] * 3
    expected += [{"eager": True}] * WARMUP_STEPS + [{"graph": 1}] * 2 + [{"graph": 0}]
    assert outputs == expected
    assert (graphs[0].replays, graphs[1].replays) == (4, 2) and len(steps) == len(phases)
    runner.close()
    assert runner.graphs == {} and runner.captured


def test_training_sets_the_phase_from_the_recipe_and_leaves_no_gradients(monkeypatch):
    directions = random_directions(16, 8, seed=0, device=DEVICE)[0]
    source = DictionarySource(directions, FeatureDistribution(16, 0.1, device=DEVICE))
    sae = SAE(8, 16, recipe="relu_l1", seed=0, device=DEVICE)
    seen, loss = [], sae.recipe.loss

    def recording_loss(sae_, x, state):
        seen.append(state.phase)
        return loss(sae_, x, state)

    monkeypatch.setattr(sae.recipe, "phase_boundaries", lambda sae_, steps: [2, 5], raising=False)
    monkeypatch.setattr(sae.recipe, "loss", recording_loss)
    result = train_sae(sae, source, steps=7, batch_size=32, quiet=True, capture="off")
    assert seen == [0, 0, 1, 1, 1, 2, 2]
    assert all(p.grad is None for p in sae.parameters())  # nothing points into a released graph's memory
    assert not result.captured and result.capture_failure is None


def test_tf32_is_allowed_only_while_a_step_runs():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    inside = []
    runner = StepRunner(lambda: inside.append(matmul.fp32_precision) or {}, torch.device("cpu"), tf32=True)
    runner()
    assert inside == ["tf32"] and matmul.fp32_precision == before
    with pytest.raises(KeyError), tf32_matmuls():
        raise KeyError("an error inside still restores the setting")
    assert matmul.fp32_precision == before
