"""How a p-value is shown to a reader: one set of rules for the HTML report and the model card.

Why: a number like `p = 1.8e-06` reads as strong evidence, but on 6 cases it only reflects how
the test was set up (1,000 bootstrap resamples treated as independent pairs, a chi-square
approximation far outside its range). So:

- a p-value of a task with fewer than `MIN_CASES_FOR_P` cases is not shown as a number
  ("not interpretable (6 cases)");
- a p-value is never shown below its resolution: below `floor` (1/resamples for a
  bootstrap-paired test, never finer than 0.001) it reads "< 0.005", never "0.000";
- an exact paired test on n folds or draws cannot go below 1/2^n (`smallest_exact_p`); the
  report says so with the actual n.
"""

from __future__ import annotations

import math

MIN_CASES_FOR_P = 20  # below this many cases a p-value is a caveat, not a number
DISPLAY_FLOOR = 0.001  # the finest p-value ever printed as a number


def smallest_exact_p(n_pairs: int) -> float:
    """The smallest one-sided p an exact Wilcoxon signed-rank test can give on `n_pairs` pairs
    (all differences positive, no ties): 1/2^n — 5 folds: 0.031, 2 folds: 0.25."""
    return 0.5 ** max(int(n_pairs), 0)


def resolution(n_resamples: int | None) -> float:
    """The smallest p worth printing for a test on `n_resamples` bootstrap resamples."""
    if not n_resamples or n_resamples <= 0:
        return DISPLAY_FLOOR
    return max(DISPLAY_FLOOR, 1.0 / n_resamples)


def too_few_cases(n_cases: int | None) -> bool:
    return n_cases is not None and n_cases < MIN_CASES_FOR_P


def format_p(p: float | None, *, n_cases: int | None = None, floor: float = DISPLAY_FLOOR) -> str:
    """`0.042`, `< 0.005` (below `floor`), `not interpretable (6 cases)`, or `–` when untested.

    Never `0.000`: a value below `floor` (at least DISPLAY_FLOOR) prints as a bound.
    """
    if p is None or not isinstance(p, int | float) or not math.isfinite(p):
        return "–"
    if too_few_cases(n_cases):
        return f"not interpretable ({n_cases} cases)"
    floor = max(floor, DISPLAY_FLOOR)
    if p < floor:
        return f"< {floor:.3g}"
    return f"{p:.3f}"


def p_clause(p: float | None, *, n_cases: int | None = None, floor: float = DISPLAY_FLOOR) -> str:
    """`format_p` as a clause after a test's name: `p = 0.042`, `p < 0.005`,
    `p not interpretable (6 cases)`, `p = n/a`."""
    text = format_p(p, n_cases=n_cases, floor=floor)
    if text == "–":
        return "p = n/a"
    if text.startswith("<"):
        return f"p {text}"
    if text.startswith("not"):
        return f"p {text}"
    return f"p = {text}"
