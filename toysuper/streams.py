"""Counter-based random streams, one per instance, drawn for every instance in one set of kernels.

The number at position p of the draw with counter c is h(((p ^ (a + t)) · K) ^ (b + t)), t = c·γ mod 2^32
(γ odd: distinct for 2^32 draws), K odd, (a, b) the two 32-bit halves of SplitMix64's finaliser of the
instance's seed (Steele, Lea & Flood 2014), h Wellons's lowbias32 ("Prospecting for hash functions", 2018),
a bijection of 32-bit words. For fixed keys p -> number is a bijection, so a draw repeats no word within a
stream. The multiply between the two keys keeps streams apart: with h(p ^ k) alone, two streams whose keys
agree above the draw's size would read the same words, permuted. 32-bit integer ops vectorise on CPUs where
64-bit shifts and multiplies do not; every op costs a small draw a dispatch, so the hash is one lowbias32.

An instance's numbers depend on its seed, the counter and their positions alone, never on how many instances
share the batch. The counter is a 0-d int64 device tensor that each draw advances in place: a CUDA graph that
replays a draw reads fresh numbers with no generator to register. torch's integer multiplies wrap (two's
complement); its right shift of a negative number is arithmetic, so each xorshift masks it to a logical one.
Positions are int32 tensors (R or 1, ...), R the rows drawn: below 2^31.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import torch

_GAMMA = 0x9E3779B97F4A7C15 - 2**64  # SplitMix64's constants as signed int64 (two's complement)
_M1 = 0xBF58476D1CE4E5B9 - 2**64
_M2 = 0x94D049BB133111EB - 2**64
_LOW = (0x7FEB352D, 0x846CA68B - 2**32)  # lowbias32's multipliers as signed int32
_KEY = 0x9E3779B9 - 2**32  # odd, as signed int32: multiplying by it is a bijection


def mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser of int64 `x`, in place: a bijection.

    (Methods, not the >> and & operators: with a Python number those take a slow path on a CPU.)"""
    x.bitwise_xor_(x.bitwise_right_shift(30).bitwise_and_((1 << 34) - 1)).mul_(_M1)
    x.bitwise_xor_(x.bitwise_right_shift(27).bitwise_and_((1 << 37) - 1)).mul_(_M2)
    return x.bitwise_xor_(x.bitwise_right_shift(31).bitwise_and_((1 << 33) - 1))


def mix32(x: torch.Tensor, c: SimpleNamespace) -> torch.Tensor:
    """lowbias32 of a contiguous int32 `x`, in place: a bijection (c: `_constants(x.device)`)."""
    _fold_halves(x).mul_(c.low0)
    x.bitwise_xor_(x.bitwise_right_shift(c.fifteen).bitwise_and_(c.mask17)).mul_(c.low1)
    return _fold_halves(x)


@functools.cache
def _constants(device: torch.device) -> SimpleNamespace:
    """The hash's and the uniforms' constants as 0-d tensors on `device`, made once: an op with a Python
    number wraps it in a fresh tensor at every call, which costs a small draw more than its arithmetic."""
    def int32(value: int) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.int32, device=device)

    return SimpleNamespace(low0=int32(_LOW[0]), low1=int32(_LOW[1]), fifteen=int32(15), mask17=int32(0x1FFFF),
                           eight=int32(8), key=int32(_KEY), one=torch.ones((), dtype=torch.int64, device=device),
                           half=torch.tensor(0.5, device=device))


def _fold_halves(x: torch.Tensor) -> torch.Tensor:
    """x ^= x >>> 16, in place, as one op on x's 16-bit halves (element 0 of each pair is the low half on the
    little-endian machines torch runs on): twice as fast on a CPU as a shift, a mask and an xor."""
    low, high = x.view(torch.int16).view(-1, 2).unbind(1)
    low.bitwise_xor_(high)
    return x


class Streams:
    """One random stream per instance: `keys` (inst,) int64 seeds and a shared 0-d int64 `counter`.

    Equal keys give equal numbers; each draw (`bits`, `uniform`, `normal`, `integers`) advances the
    counter by 1, even when it draws nothing, so what follows does not depend on it.
    """

    def __init__(self, keys: torch.Tensor, counter: torch.Tensor | None = None):
        self.keys = keys.to(torch.int64)
        self.counter = torch.zeros((), dtype=torch.int64, device=keys.device) if counter is None else counter
        mixed = mix(self.keys.clone())
        low = mixed.bitwise_left_shift(32).bitwise_right_shift_(32)
        self._halves = torch.stack([low, mixed.bitwise_right_shift(32)]).int()  # (2, inst) signed 32-bit halves
        self._pair = torch.tensor([0, 1], dtype=torch.int32, device=keys.device)
        self._constants = _constants(keys.device)
        self.device, self.n_instances = keys.device, len(keys)

    def bits(self, position: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """32 random bits (int32) at each position of instance rows[r]'s stream, shaped (R, *position.shape[1:]);
        rows: sorted instance indices, every instance by default. Advances the counter."""
        c = self._constants
        if not position.numel() or (rows is not None and not rows.numel()):
            return self._nothing(position, rows, torch.int32)
        if rows is not None and len(rows) == len(self.keys):  # (callers pass every instance as rows 0 .. n-1)
            rows = None
        halves = self._halves if rows is None else self._halves.index_select(1, rows)
        # (a + t, b + t), t = c·γ mod 2^32: int32 arithmetic wraps, so only γ's low word matters
        low, high = halves.add(self.counter, alpha=_GAMMA % 2**32).view(2, -1, *(1,) * (position.ndim - 1)).unbind(0)
        self.counter.add_(c.one)
        return mix32(torch.bitwise_xor(position, low).mul_(c.key).bitwise_xor_(high), c)

    def uniform(self, position: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """float32 uniforms on [0, 1) in steps of 2^-24 (torch.rand's grid), shaped as in `bits`: the top 24
        bits read as a signed number in [-2^23, 2^23) (an arithmetic shift), scaled, plus 1/2."""
        if not position.numel() or (rows is not None and not rows.numel()):
            return self._nothing(position, rows, torch.float32)
        c = self._constants
        return torch.add(c.half, self.bits(position, rows).bitwise_right_shift_(c.eight), alpha=2.0 ** -24)  # float32

    def normal(self, position: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normals by Box–Muller (1958): √(-2 ln(1 - u)) cos(2π v), u and v at 2p and 2p + 1."""
        if not position.numel() or (rows is not None and not rows.numel()):
            return self._nothing(position, rows, torch.float32)
        pair = self.uniform(torch.add(position.unsqueeze(-1).mul(2), self._pair), rows)
        return pair[..., 0].neg().log1p_().mul_(-2).sqrt_().mul_(pair[..., 1].mul(2 * math.pi).cos_())

    def integers(self) -> torch.Tensor:
        """One int64 in [0, 2^62) per instance, (inst,): seeds for samplers that take one."""
        words = self.bits(positions(2, device=self.device)).long().bitwise_and_(2**32 - 1)
        return words[:, 0].bitwise_left_shift(30).bitwise_xor_(words[:, 1]).bitwise_and_(2**62 - 1)

    def _nothing(self, position: torch.Tensor, rows: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """An empty draw: it advances the counter alone (one op: small draws are mostly such overhead)."""
        self.counter.add_(self._constants.one)
        return torch.empty(len(self.keys) if rows is None else len(rows), *position.shape[1:], dtype=dtype,
                           device=self.device)

    def select(self, rows) -> "Streams":
        """A view on the streams of instances `rows`: it shares this one's counter (its draws advance both)."""
        rows = torch.as_tensor(rows, dtype=torch.int64, device=self.device).reshape(-1)
        return Streams(self.keys.index_select(0, rows), self.counter)

    def __repr__(self) -> str:
        return f"Streams({self.n_instances} instances, device={self.device})"


def positions(*shape: int, device=None) -> torch.Tensor:
    """Row-major positions 0 .. prod(shape) - 1 laid out as (1, *shape): the plain layout of a draw."""
    return torch.arange(math.prod(shape), dtype=torch.int32, device=device).view(1, *shape)


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
