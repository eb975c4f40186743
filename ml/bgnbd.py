"""The BG/NBD model (Fader, Hardie and Lee, "Counting your customers the easy way", 2005), the
baseline every repurchase model here is compared against.

A customer buys as a Poisson process of rate lambda while alive, lambda ~ Gamma(r, alpha); after
each purchase they drop out with probability p, p ~ Beta(a, b). From a customer's repeat
purchases `x`, the time of the last one `t_x` and their age `T` (all since the first purchase),
the likelihood is

    L = B(a, b + x) / B(a, b) * Gamma(r + x) alpha^r / (Gamma(r) (alpha + T)^(r + x))
      + [x > 0] B(a + 1, b + x - 1) / B(a, b) * Gamma(r + x) alpha^r / (Gamma(r) (alpha + t_x)^(r + x))

fitted by maximum likelihood (L-BFGS-B on log parameters), and the expected purchases in the
next `t` days are the paper's equation (10), with the Gaussian hypergeometric function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def expected_purchases(self, t: float, x, t_x, T) -> np.ndarray:
        """E[purchases in (T, T + t] | x, t_x, T], per customer."""
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
        body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
        alive_term = np.where(x > 0, a / np.maximum(b + x - 1, 1e-12)
                              * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
        return head * body / (1 + alive_term)

    def p_alive(self, x, t_x, T) -> np.ndarray:
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        term = np.where(x > 0, self.a / np.maximum(self.b + x - 1, 1e-12)
                        * ((self.alpha + T) / (self.alpha + t_x)) ** (self.r + x), 0.0)
        return 1 / (1 + term)


def log_likelihood(params, x, t_x, T) -> np.ndarray:
    """Per-customer log-likelihood of (r, alpha, a, b)."""
    r, alpha, a, b = params
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    first = betaln(a, b + x) - betaln(a, b) + common - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        second = np.where(x > 0, betaln(a + 1, np.maximum(b + x - 1, 1e-12)) - betaln(a, b) + common
                          - (r + x) * np.log(alpha + t_x), -np.inf)
    return np.logaddexp(first, second)


def fit(x, t_x, T, start=(0.5, 5.0, 1.0, 3.0)) -> BgNbd:
    """Maximum-likelihood parameters for customers with repeat purchases `x`, last-purchase
    time `t_x` and age `T` (days since the first purchase)."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    if len(x) == 0:
        raise ValueError("BG/NBD needs at least one customer")

    def negative(log_params):
        value = -log_likelihood(np.exp(log_params), x, t_x, T).sum()
        return value if np.isfinite(value) else 1e300

    result = minimize(negative, np.log(start), method="L-BFGS-B",
                      bounds=[(-8, 6)] * 4)
    r, alpha, a, b = np.exp(result.x)
    return BgNbd(float(r), float(alpha), float(a), float(b))


def simulate(model: BgNbd, n: int, T: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) of `n` customers observed for `T` days each, drawn from `model`. The same
    seed observed for a longer T gives the same customers' longer histories."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(model.r, 1 / model.alpha, n)
    p = rng.beta(model.a, model.b, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    for i in range(n):  # a stream per customer: observed longer, the same customer goes on
        rng = np.random.default_rng([seed, i])
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:  # drops out after this purchase
                break
    return x, t_x, np.full(n, float(T))
