"""Poisson and binomial tail probabilities for the detectors, in pure Python.

Both tails reduce to regularized incomplete functions (Numerical Recipes, 3rd ed., 6.2, 6.4):

    Poisson(lam):  P(X <= k) = Q(k + 1, lam)      P(X >= k) = P(k, lam)
    Bin(n, p):     P(X <= k) = I_{1-p}(n - k, k + 1)

where P/Q are the regularized lower/upper incomplete gamma functions and I the regularized
incomplete beta function. Numerical choices:

* Prefactors such as ``x^a e^-x / Gamma(a)`` are formed in log space with ``math.lgamma``,
  so counts up to ~1e6 neither overflow nor underflow before the final ``exp``.
* Whichever tail is small is computed directly, never as ``1 - big``: a p-value of 1e-12
  keeps its digits instead of cancelling to 0 (it only underflows below ~1e-308).
* Small shape parameters use the power series (gamma, below its mean) or the modified
  Lentz continued fraction (gamma above its mean, beta); these converge in a few dozen
  terms there. For large shapes both need O(sqrt(a)) terms, thousands at 1e6, so from
  ``a >= 100`` (gamma) and ``a, b >= 500`` (beta) a 24-point Gauss-Legendre quadrature of
  the integrand over the few standard deviations that matter (as NR3 ``gammpapprox`` and
  ``betaiapprox``) takes constant time: about 10 us a call at any size. Its relative error
  is below ~1e-9 for tails above 1e-30 (about what ``lgamma`` itself allows at 1e6) and
  grows to ~1e-3 only in tails near underflow, far past any alpha a detector compares with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

_EPS = 1e-15
_FPMIN = 1e-300
_MAX_TERMS = 100_000  # a guard only; the switches below keep real runs far shorter
_GAMMA_QUAD = 100.0  # shape from which the gamma tail is integrated by quadrature
_BETA_QUAD = 500.0  # both shapes from which the beta tail is integrated by quadrature


def _gauss_legendre(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights of n-point Gauss-Legendre quadrature on [0, 1] (Newton on P_n)."""
    nodes: list[float] = []
    weights: list[float] = []
    for i in range(1, n + 1):
        z = math.cos(math.pi * (i - 0.25) / (n + 0.5))
        for _ in range(100):
            p1, p2 = 1.0, 0.0
            for j in range(1, n + 1):
                p1, p2 = ((2 * j - 1) * z * p1 - (j - 1) * p2) / j, p1
            dp = n * (z * p1 - p2) / (z * z - 1)
            z_new = z - p1 / dp
            if abs(z_new - z) < 1e-15:
                z = z_new
                break
            z = z_new
        nodes.append((1 - z) / 2)
        weights.append(1 / ((1 - z * z) * dp * dp))
    return tuple(nodes), tuple(weights)


_GL_NODES, _GL_WEIGHTS = _gauss_legendre(24)


def _gamma_series(a: float, x: float) -> float:
    """P(a, x) by its power series; converges fast for x < a + 1."""
    ap, term = a, 1.0 / a
    total = term
    for _ in range(_MAX_TERMS):
        ap += 1.0
        term *= x / ap
        total += term
        if term < total * _EPS:
            break
    return math.exp(math.log(total) - x + a * math.log(x) - math.lgamma(a))


def _lentz(d: float, c: float, an: float, bn: float) -> tuple[float, float, float]:
    """One step of the modified Lentz method: new (d, c) and the factor for h."""
    d = an * d + bn
    if abs(d) < _FPMIN:
        d = _FPMIN
    c = bn + an / c
    if abs(c) < _FPMIN:
        c = _FPMIN
    d = 1.0 / d
    return d, c, d * c


def _gamma_cf(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction (modified Lentz); converges fast for x > a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_TERMS):
        b += 2.0
        d, c, delta = _lentz(d, c, -i * (i - a), b)
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(math.log(h) - x + a * math.log(x) - math.lgamma(a))


def _gamma_quad(a: float, x: float) -> tuple[float, bool]:
    """The small tail of the gamma(a) distribution beyond x, by quadrature (a >= 100).

    Returns (tail, upper): Q(a, x) when x is above the mode, else P(a, x).
    """
    a1 = a - 1.0
    sd = math.sqrt(a1)
    upper = x > a1
    # Out to where the integrand is negligible (NR3's limits), away from the mode.
    xu = (max(a1 + 11.5 * sd, x + 6.0 * sd) if upper
          else max(0.0, min(a1 - 7.5 * sd, x - 5.0 * sd)))
    span = xu - x
    total = 0.0
    for y, w in zip(_GL_NODES, _GL_WEIGHTS, strict=True):
        t = x + span * y
        # t^a1 e^-t relative to its peak at a1; log1p keeps the digits near the peak.
        total += w * math.exp(a1 * math.log1p((t - a1) / a1) - (t - a1))
    tail = abs(total * span) * math.exp(a1 * (math.log(a1) - 1.0) - math.lgamma(a))
    return min(tail, 1.0), upper


def _gamma_bulk(a: float, x: float) -> bool:
    """Whether (a, x) is where the series/fraction are slow and the quadrature is used.

    Away from the mean (x/a outside [0.5, 1.5]) they converge in tens of terms at any a.
    """
    return a >= _GAMMA_QUAD and 0.5 * a <= x <= 1.5 * a


def gamma_p(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) = gamma(a, x) / Gamma(a), for a > 0."""
    if x <= 0.0:
        return 0.0
    if _gamma_bulk(a, x):
        tail, upper = _gamma_quad(a, x)
        return 1.0 - tail if upper else tail
    if x < a + 1.0:
        return _gamma_series(a, x)
    return 1.0 - _gamma_cf(a, x)


def gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) = 1 - P(a, x), for a > 0."""
    if x <= 0.0:
        return 1.0
    if _gamma_bulk(a, x):
        tail, upper = _gamma_quad(a, x)
        return tail if upper else 1.0 - tail
    if x < a + 1.0:
        return 1.0 - _gamma_series(a, x)
    return _gamma_cf(a, x)


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz); fast for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _FPMIN:
        d = _FPMIN
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_TERMS):
        m2 = 2 * m
        d, c, delta = _lentz(d, c, m * (b - m) * x / ((qam + m2) * (a + m2)), 1.0)
        h *= delta
        d, c, delta = _lentz(d, c, -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)), 1.0)
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def _beta_quad(a: float, b: float, x: float) -> float:
    """I_x(a, b) by quadrature of the small tail beyond x (a, b >= 3000)."""
    a1, b1 = a - 1.0, b - 1.0
    mu = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    upper = x > mu
    if upper:
        xu = min(1.0, max(mu + 10.0 * sd, x + 5.0 * sd))
    else:
        xu = max(0.0, min(mu - 10.0 * sd, x - 5.0 * sd))
    span = xu - x
    total = 0.0
    for node, w in zip(_GL_NODES, _GL_WEIGHTS, strict=True):
        t = x + span * node
        # Relative to the values at mu, which the prefactor restores.
        total += w * math.exp(
            a1 * math.log1p((t - mu) / mu) + b1 * math.log1p((mu - t) / (1.0 - mu))
        )
    log_pre = (
        a1 * math.log(mu) + b1 * math.log1p(-mu)
        + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    )
    tail = min(abs(total * span) * math.exp(log_pre), 1.0)
    return 1.0 - tail if upper else tail


def _beta_i(a: float, b: float, x: float, y: float) -> float:
    """Regularized incomplete beta I_x(a, b), with y = 1 - x given exactly by the caller."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    if a >= _BETA_QUAD and b >= _BETA_QUAD:
        mu = a / (a + b)
        # Far out (and near 0 or 1, where logs would lose everything) the fraction is fast.
        if 0.5 * mu <= x <= mu + 0.5 * (1.0 - mu):
            return _beta_quad(a, b, x)
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, y) / b


def poisson_cdf(k: float, lam: float) -> float:
    """P(X <= k) for X ~ Poisson(lam); k is floored, so 2.7 means at most 2."""
    k = math.floor(k)
    if k < 0:
        return 0.0
    if lam <= 0.0:
        return 1.0
    return gamma_q(k + 1.0, lam)


def poisson_sf(k: float, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam) (inclusive); k is ceiled, so 2.3 means at least 3."""
    k = math.ceil(k)
    if k <= 0:
        return 1.0
    if lam <= 0.0:
        return 0.0
    return gamma_p(float(k), lam)


def binom_cdf(k: float, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p); k is floored."""
    k = math.floor(k)
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return _beta_i(float(n - k), float(k + 1), 1.0 - p, p)


def median(values: Iterable[float]) -> float:
    """The median (mean of the middle two for an even count); raises on no values."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0
