"""Access patterns: the true access rate of every region of a process, a pure function of (time, spec, seed).

`ProcessWorkload` gives, for one process, which regions exist at time t (`allocated_at`, `births`), their
instantaneous rates (`rates_at`) and the exact integral of the rates over an interval (`integrate`,
`integrate_one`), computed in closed form (no per-access or per-step loop): rankings that rotate and expert groups
that change are piecewise constant between their boundaries, bursts have a closed-form hot time, and growth decays
exponentially. Randomness (where a hot set starts, which experts are active) comes from random.Random seeded with
a string built from the seed, so the same seed always gives the same rates.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod

from cxltierd.emulate.spec import Burst, Groups, Growth, HotSet, Pattern, ProcessSpec, Uniform, Zipf
from cxltierd.model import PAGE_SIZE

INF = math.inf
_EPS = 1e-9


def _rotate(values: list[float], offset: int) -> list[float]:
    """Values shifted right by offset: out[(i + offset) % n] = values[i]."""
    n = len(values)
    offset %= n
    return values[n - offset :] + values[: n - offset] if offset else list(values)


class _Model(ABC):
    """The rates of one phase's pattern; only asked about times inside the phase."""

    def __init__(self, at: float, n: int) -> None:
        self.at = at
        self.n = n

    @abstractmethod
    def rates(self, t: float) -> list[float]:
        """Instantaneous rate of each region (read-only list)."""

    @abstractmethod
    def integrate(self, a: float, b: float) -> list[float]:
        """Accesses of each region over [a, b] (a new list)."""

    @abstractmethod
    def integrate_one(self, i: int, a: float, b: float) -> float:
        """Accesses of region i over [a, b]."""


class _Epochs(_Model):
    """Rates constant within epochs of length `period` (one epoch when period is None)."""

    def __init__(self, at: float, n: int, period: float | None) -> None:
        super().__init__(at, n)
        self.period = period
        self._cache: dict[int, list[float]] = {}

    @abstractmethod
    def build(self, epoch: int) -> list[float]:
        """The rate vector of an epoch."""

    def vector(self, epoch: int) -> list[float]:
        vec = self._cache.get(epoch)
        if vec is None:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            vec = self._cache[epoch] = self.build(epoch)
        return vec

    def epoch(self, t: float) -> int:
        return 0 if self.period is None else max(0, math.floor((t - self.at) / self.period + _EPS))

    def pieces(self, a: float, b: float) -> list[tuple[int, float]]:
        """(epoch, seconds) pieces covering [a, b]."""
        if self.period is None:
            return [(0, b - a)]
        out = []
        t = a
        k = self.epoch(a)
        while t < b:
            end = min(b, self.at + (k + 1) * self.period)
            if end > t:
                out.append((k, end - t))
                t = end
            k += 1
        return out

    def rates(self, t: float) -> list[float]:
        return self.vector(self.epoch(t))

    def integrate(self, a: float, b: float) -> list[float]:
        pieces = self.pieces(a, b)
        k, dt = pieces[0]
        out = [v * dt for v in self.vector(k)]
        for k, dt in pieces[1:]:
            out = [o + v * dt for o, v in zip(out, self.vector(k), strict=True)]
        return out

    def integrate_one(self, i: int, a: float, b: float) -> float:
        return sum(self.vector(k)[i] * dt for k, dt in self.pieces(a, b))


class _Ranked(_Epochs):
    """A rate per rank laid out over the address space from a seeded offset, rotating by `shift` at each epoch."""

    def __init__(self, at: float, n: int, period: float | None, shift: float, by_rank: list[float], rng: random.Random):
        super().__init__(at, n, period)
        self.by_rank = by_rank
        self.offset = rng.randrange(n)
        self.step = max(1, round(shift * n)) if period is not None else 0

    def build(self, epoch: int) -> list[float]:
        return _rotate(self.by_rank, self.offset + epoch * self.step)


def _zipf(p: Zipf, at: float, n: int, rng: random.Random) -> _Ranked:
    weights = [(r + 1) ** -p.skew for r in range(n)]
    scale = p.rate / sum(weights)
    return _Ranked(at, n, p.shift_period, p.shift, [w * scale for w in weights], rng)


def _hotset(p: HotSet, at: float, n: int, rng: random.Random) -> _Ranked:
    hot = max(1, round(p.hot_fraction * n))
    if hot >= n:
        by_rank = [p.rate / n] * n
    else:
        by_rank = [p.rate * p.hot_share / hot] * hot + [p.rate * (1 - p.hot_share) / (n - hot)] * (n - hot)
    return _Ranked(at, n, p.shift_period, p.shift, by_rank, rng)


class _Groups(_Epochs):
    def __init__(self, p: Groups, at: float, n: int, seed: str) -> None:
        super().__init__(at, n, p.period)
        self.p = p
        self.seed = seed

    def active_groups(self, epoch: int) -> list[int]:
        return sorted(random.Random(f"{self.seed}/epoch{epoch}").sample(range(self.p.groups), self.p.active))

    def build(self, epoch: int) -> list[float]:
        n, g = self.n, self.p.groups
        hot = [False] * n
        for grp in self.active_groups(epoch):
            for i in range(grp * n // g, (grp + 1) * n // g):
                hot[i] = True
        n_hot = sum(hot)
        if n_hot == n:
            return [self.p.rate / n] * n
        on = self.p.rate * self.p.active_share / n_hot
        off = self.p.rate * (1 - self.p.active_share) / (n - n_hot)
        return [on if h else off for h in hot]


class _Uniform(_Epochs):
    def __init__(self, p: Uniform, at: float, n: int) -> None:
        super().__init__(at, n, None)
        self.rate = p.rate

    def build(self, epoch: int) -> list[float]:
        return [self.rate / self.n] * self.n


class _Burst(_Model):
    def __init__(self, p: Burst, at: float, n: int, rng: random.Random) -> None:
        super().__init__(at, n)
        self.p = p
        self.hot_seconds = p.duty * p.period
        size = max(1, round(p.region_fraction * n))
        start = rng.randrange(n)
        members = {(start + j) % n for j in range(size)}
        base = p.base_rate / n
        self.off = [base] * n
        self.on = [p.rate / size if i in members else base for i in range(n)]
        self.extra = [on - off for on, off in zip(self.on, self.off, strict=True)]

    def hot_until(self, t: float) -> float:
        """Seconds of burst in [at, t]."""
        u = max(0.0, t - self.at)
        full = math.floor(u / self.p.period)
        rest = u - full * self.p.period
        return full * self.hot_seconds + min(max(rest - self.p.offset, 0.0), self.hot_seconds)

    def in_burst(self, t: float) -> bool:
        rest = (t - self.at) % self.p.period
        return self.p.offset <= rest < self.p.offset + self.hot_seconds

    def rates(self, t: float) -> list[float]:
        return self.on if self.in_burst(t) else self.off

    def integrate(self, a: float, b: float) -> list[float]:
        dt = b - a
        hot = self.hot_until(b) - self.hot_until(a)
        return [o * dt + x * hot for o, x in zip(self.off, self.extra, strict=True)]

    def integrate_one(self, i: int, a: float, b: float) -> float:
        return self.off[i] * (b - a) + self.extra[i] * (self.hot_until(b) - self.hot_until(a))


class _Growth(_Model):
    """Allocation index q (region q % n) happens at at + max(0, q*R - initial) / grow_rate; rates decay with age."""

    def __init__(self, p: Growth, at: float, n: int, region_size: int) -> None:
        super().__init__(at, n)
        self.p = p
        self.r = region_size
        self.k = math.log(2) / p.half_life
        self.amp = p.region_rate - p.cold_rate

    def last_index(self, t: float) -> int:
        """Highest allocation index done by t (-1 before the phase). Without wrap it stops at n - 1."""
        if t < self.at:
            return -1
        q = math.floor((self.p.initial + self.p.grow_rate * (t - self.at)) / self.r + _EPS)
        return q if self.p.wrap else min(q, self.n - 1)

    def birth(self, q: int) -> float:
        return self.at + max(0, q * self.r - self.p.initial) / self.p.grow_rate

    def count(self, t: float) -> int:
        return min(self.n, self.last_index(t) + 1)

    def last_birth(self, i: int, t: float) -> float | None:
        q = self.last_index(t)
        if i > q:
            return None
        return self.birth(i + self.n * ((q - i) // self.n) if self.p.wrap else i)

    def _decay(self, born: float, a: float, b: float) -> float:
        """Accesses over [a, b] of a region born at `born` <= a."""
        return self.p.cold_rate * (b - a) + self.amp / self.k * (
            math.exp((born - a) * self.k) - math.exp((born - b) * self.k)
        )

    def rates(self, t: float) -> list[float]:
        out = [0.0] * self.n
        for i in range(self.count(t)):
            born = self.last_birth(i, t)
            if born is not None:
                out[i] = self.p.cold_rate + self.amp * math.exp((born - t) * self.k)
        return out

    def integrate_one(self, i: int, a: float, b: float) -> float:
        born = self.last_birth(i, a)
        qa, qb = self.last_index(a), self.last_index(b)
        total, t = 0.0, a
        # allocations of region i within (a, b]: indexes q = i (mod n) in (qa, qb]
        q = i if i > qa else (i + self.n * ((qa - i) // self.n + 1) if self.p.wrap else qb + 1)
        while q <= qb:
            when = self.birth(q)
            if born is not None:
                total += self._decay(born, t, when)
            born, t = when, when
            q = q + self.n if self.p.wrap else qb + 1
        if born is not None:
            total += self._decay(born, t, b)
        return total

    def integrate(self, a: float, b: float) -> list[float]:
        qa, qb = self.last_index(a), self.last_index(b)
        dt = b - a
        base = self.p.cold_rate * dt
        c = self.amp / self.k * (1.0 - math.exp(-dt * self.k))
        k, n, r, g, initial, exp = self.k, self.n, self.r, self.p.grow_rate, self.p.initial, math.exp
        born = min(n, qa + 1)  # regions allocated by a; their last allocation index q, done at birth(q)
        last = [i + n * ((qa - i) // n) for i in range(born)] if self.p.wrap else range(born)
        at_minus_a = self.at - a
        out = [base + c * exp((at_minus_a + (q * r - initial if q * r > initial else 0) / g) * k) for q in last]
        out += [0.0] * (n - born)
        for q in range(qa + 1, min(qb, qa + n) + 1):  # regions (re)allocated inside the interval
            i = q % n
            out[i] = self.integrate_one(i, a, b)
        return out


def _model(p: Pattern, at: float, n: int, region_size: int, seed: str) -> _Model:
    rng = random.Random(seed)
    if isinstance(p, Zipf):
        return _zipf(p, at, n, rng)
    if isinstance(p, HotSet):
        return _hotset(p, at, n, rng)
    if isinstance(p, Growth):
        return _Growth(p, at, n, region_size)
    if isinstance(p, Burst):
        return _Burst(p, at, n, rng)
    if isinstance(p, Groups):
        return _Groups(p, at, n, seed)
    if isinstance(p, Uniform):
        return _Uniform(p, at, n)
    raise TypeError(f"unknown pattern {p!r}")


class ProcessWorkload:
    """The regions of one process over time and their true access rates. Pure: no state changes after init."""

    def __init__(self, spec: ProcessSpec, region_size: int, seed: int) -> None:
        self.spec = spec
        self.region_size = region_size
        self.n = -(-spec.size // region_size)
        last = spec.size - (self.n - 1) * region_size
        self.sizes = [region_size] * (self.n - 1) + [-(-last // PAGE_SIZE) * PAGE_SIZE]
        self.end = spec.exit_at if spec.exit_at is not None else INF
        self.phases: list[tuple[float, float, _Model]] = []
        for k, phase in enumerate(spec.phases):
            until = spec.phases[k + 1].at if k + 1 < len(spec.phases) else INF
            model = _model(phase.pattern, phase.at, self.n, region_size, f"{seed}/{spec.pid}/{k}")
            self.phases.append((phase.at, min(until, self.end), model))
        first = self.phases[0][2]
        self.growth = first if isinstance(first, _Growth) else None

    def alive(self, t: float) -> bool:
        """Whether the process exists at scenario time t."""
        return self.spec.start_at <= t < self.end

    def allocated_at(self, t: float) -> int:
        """How many regions (a prefix 0..k-1) exist at t; 0 when the process is not running."""
        if not self.alive(t):
            return 0
        return self.growth.count(t) if self.growth is not None else self.n

    def births(self, after: float | None, until: float) -> list[tuple[float, int]]:
        """(time, region) of the first allocations in (after, until] (all up to `until` when after is None)."""
        if self.growth is None:
            start = self.spec.start_at
            if (after is None or after < start) and start <= until and start < self.end:
                return [(start, i) for i in range(self.n)]
            return []
        g = self.growth
        lo = -1 if after is None else min(g.last_index(after), self.n - 1)
        hi = min(g.last_index(min(until, self.end)), self.n - 1)
        return [(g.birth(q), q) for q in range(lo + 1, hi + 1) if g.birth(q) < self.end]

    def rates_at(self, t: float) -> list[float]:
        """True instantaneous accesses/s of each region at t (zeros outside the process's life)."""
        for lo, hi, model in self.phases:
            if lo <= t < hi and self.alive(t):
                return list(model.rates(t))
        return [0.0] * self.n

    def integrate(self, t0: float, t1: float) -> list[float]:
        """Accesses of each region over [t0, t1]."""
        out: list[float] | None = None
        for lo, hi, model in self.phases:
            a, b = max(t0, lo), min(t1, hi)
            if a < b:
                part = model.integrate(a, b)
                out = part if out is None else [x + y for x, y in zip(out, part, strict=True)]
        return out if out is not None else [0.0] * self.n

    def integrate_one(self, i: int, t0: float, t1: float) -> float:
        """Accesses of region i over [t0, t1]."""
        total = 0.0
        for lo, hi, model in self.phases:
            a, b = max(t0, lo), min(t1, hi)
            if a < b:
                total += model.integrate_one(i, a, b)
        return total
