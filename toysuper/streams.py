"""Counter-based random streams, one per instance, drawn for every instance in one set of kernels.

Each instance's stream is SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom
number generators"; its outputs pass BigCrush) read at an index set by the draw: the number at
position p of the draw with counter c is mix(k + (c · 2^32 + p) γ), k = mix(the instance's seed),
γ the 64-bit golden ratio, `mix` SplitMix64's bijective finaliser. So one instance's numbers are one
SplitMix64 sequence, each (counter, position) read once (positions below 2^32), and they depend on
its seed, the counter and their positions alone, never on how many instances share the batch; a
draw is a fixed set of integer tensor ops whatever the instance count. Two instances' sequences
overlap only if their keys differ by a multiple of γ below the indices used, about one chance in
2^64 / (draws · 2^32) per pair.

The counter is a 0-d int64 device tensor that each draw advances in place, so a CUDA graph that
replays a draw reads fresh numbers with no generator to register. A 64-bit hash gives two 24-bit
uniforms (`uniform2`), so a Poisson event's gap and magnitude, or a normal's two uniforms, cost one
hash. torch's int64 multiply wraps (two's complement); its right shift of a negative number is
arithmetic, so each shift is masked to be logical.
"""

from __future__ import annotations

import math

import torch

_GAMMA = 0x9E3779B97F4A7C15 - 2**64  # SplitMix64's constants as signed int64 (two's complement)
_GAMMA_HIGH = 0x7F4A7C15 << 32  # γ · 2^32 mod 2^64 (below 2^63): one counter step is 2^32 positions
_M1 = 0xBF58476D1CE4E5B9 - 2**64
_M2 = 0x94D049BB133111EB - 2**64


def mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser of int64 `x`, in place: a bijection.

    (Methods, not the >> and & operators: with a Python number those take a slow path on a CPU.)"""
    x.bitwise_xor_(x.bitwise_right_shift(30).bitwise_and_((1 << 34) - 1)).mul_(_M1)
    x.bitwise_xor_(x.bitwise_right_shift(27).bitwise_and_((1 << 37) - 1)).mul_(_M2)
    return x.bitwise_xor_(x.bitwise_right_shift(31).bitwise_and_((1 << 33) - 1))


def _top24(bits: torch.Tensor) -> torch.Tensor:
    """float32 on [0, 1) in steps of 2^-24 (torch.rand's grid) from bits 40-63: read as a signed number in
    [-2^23, 2^23) (the arithmetic shift), scaled, plus 1/2."""
    return bits.bitwise_right_shift(40).float().mul_(2.0 ** -24).add_(0.5)


class Streams:
    """One random stream per instance: `keys` (inst,) int64 and a shared 0-d int64 `counter`.

    Equal keys give equal numbers; each draw (`bits`, `uniform`, `uniform2`, `normal`, `integers`)
    advances the counter by 1. `position` arguments are int64 tensors (R or 1, ...), R the rows drawn.
    """

    def __init__(self, keys: torch.Tensor, counter: torch.Tensor | None = None):
        self.keys = keys.to(torch.int64)
        self.counter = torch.zeros((), dtype=torch.int64, device=keys.device) if counter is None else counter
        self._mixed_keys = mix(self.keys.clone())
        self._pair_shift = torch.tensor([0, 24], device=keys.device)  # bits 40-63, then 16-39, to the top

    @property
    def device(self) -> torch.device:
        return self.keys.device

    @property
    def n_instances(self) -> int:
        return len(self.keys)

    def bits(self, position: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """64 random bits (int64) at each position of instance rows[r]'s stream (every instance by default),
        shaped (R, *position.shape[1:]). Advances the counter."""
        if not position.numel() or (rows is not None and not rows.numel()):  # nothing to draw: advance alone
            self.counter.add_(1)
            return torch.empty(len(self.keys) if rows is None else len(rows), *position.shape[1:],
                               dtype=torch.int64, device=self.device)
        keys = self._mixed_keys if rows is None else self._mixed_keys.index_select(0, rows)
        start = keys.add(self.counter.mul(_GAMMA_HIGH)).view(-1, *(1,) * (position.ndim - 1))
        self.counter.add_(1)
        return mix(torch.add(start, position.mul(_GAMMA)))

    def uniform(self, position: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """float32 uniforms on [0, 1) from the top 24 bits, shaped as in `bits`."""
        return _top24(self.bits(position, rows))

    def uniform2(self, position: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Two independent uniforms per position from one hash (bits 40-63 and 16-39): (R, ..., 2)."""
        return _top24(self.bits(position, rows).unsqueeze(-1).bitwise_left_shift(self._pair_shift))

    def normal(self, position: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normals by Box–Muller (1958): √(-2 ln(1 - u)) cos(2π v), u and v from one hash."""
        pair = self.uniform2(position, rows)
        return pair[..., 0].neg().log1p_().mul_(-2).sqrt_().mul_(pair[..., 1].mul(2 * math.pi).cos_())

    def integers(self) -> torch.Tensor:
        """One int64 in [0, 2^62) per instance, (inst,): seeds for samplers that take one."""
        return self.bits(torch.zeros(1, dtype=torch.int64, device=self.device)).bitwise_and_(2**62 - 1)

    def select(self, rows) -> "Streams":
        """The streams of instances `rows`, with a counter of their own starting at this one's value."""
        rows = torch.as_tensor(rows, dtype=torch.int64, device=self.device).reshape(-1)
        return Streams(self.keys.index_select(0, rows), self.counter.clone())

    def __repr__(self) -> str:
        return f"Streams({self.n_instances} instances, device={self.device})"


def positions(*shape: int, device=None) -> torch.Tensor:
    """Row-major positions 0 .. prod(shape) - 1 laid out as (1, *shape): the plain layout of a draw."""
    return torch.arange(math.prod(shape), dtype=torch.int64, device=device).view(1, *shape)


def as_streams(generator, n_instances: int, device: torch.device) -> Streams:
    """`generator` as Streams of n_instances on `device`: Streams as given (checked); a torch.Generator (or
    a list of one per instance) or None (torch's global generator) gives fresh keys drawn from it, once
    per call, so equal generator states give equal draws."""
    if isinstance(generator, Streams):
        if generator.n_instances != n_instances or generator.device.type != device.type:
            raise ValueError(f"generator: Streams of {generator.n_instances} instances on {generator.device} given, "
                             f"but this draw needs {n_instances} on {device}")
        return generator
    if generator is None or isinstance(generator, torch.Generator):
        on = "cpu" if generator is None else generator.device
        keys = torch.randint(-2**63, 2**63 - 1, (n_instances,), generator=generator, device=on, dtype=torch.int64)
        return Streams(keys.to(device))
    try:
        generators = list(generator)
    except TypeError as error:
        raise TypeError(f"generator must be Streams (toysuper.instance_generators), a torch.Generator, a list of "
                        f"them or None, got {generator!r}") from error
    if len(generators) != n_instances or not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(f"generator: a list must hold one torch.Generator per instance ({n_instances}), got "
                         f"{generator!r}")
    keys = [torch.randint(-2**63, 2**63 - 1, (1,), generator=g, device=g.device, dtype=torch.int64).to(device)
            for g in generators]
    return Streams(torch.cat(keys))
