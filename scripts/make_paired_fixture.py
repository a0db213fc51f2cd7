"""Reference p-values for ckpt's paired significance tests (src/eval/compare.rs).

Exact McNemar (two-sided binomial test on the discordant pairs, scipy.stats.binomtest)
for 0/1 items, paired t-test (scipy.stats.ttest_rel) otherwise; Pearson's r with its
two-sided p-value (scipy.stats.pearsonr) for sharpness against SFT score. Synthetic
items only.

    /work/pyref/bin/python scripts/make_paired_fixture.py > tests/fixtures/eval/paired.json
"""
import json
import random

from scipy import stats

rng = random.Random(7)
cases = []
for n, p_a, p_b in [(40, 0.5, 0.6), (200, 0.3, 0.36), (25, 0.8, 0.8), (500, 0.55, 0.5)]:
    a = [1.0 if rng.random() < p_a else 0.0 for _ in range(n)]
    b = [x if rng.random() < 0.7 else (1.0 if rng.random() < p_b else 0.0) for x in a]
    b01 = sum(1 for x, y in zip(a, b) if x == 0 and y == 1)
    b10 = sum(1 for x, y in zip(a, b) if x == 1 and y == 0)
    p = 1.0 if b01 + b10 == 0 else stats.binomtest(min(b01, b10), b01 + b10, 0.5).pvalue
    cases.append({"a": a, "b": b, "method": "mcnemar", "p_value": p})
for n, shift in [(30, 0.1), (120, 0.02), (10, 0.5)]:
    a = [rng.gauss(0, 1) for _ in range(n)]
    b = [x + shift + rng.gauss(0, 0.5) for x in a]
    p = stats.ttest_rel(a, b).pvalue
    cases.append({"a": a, "b": b, "method": "paired_t", "p_value": float(p)})
pearson = []
for n, slope in [(6, -0.8), (20, 0.3), (12, 0.0)]:
    x = [rng.gauss(0, 1) for _ in range(n)]
    y = [slope * a + rng.gauss(0, 0.5) for a in x]
    r, p = stats.pearsonr(x, y)
    pearson.append({"x": x, "y": y, "r": float(r), "p_value": float(p)})
print(json.dumps({"scipy": __import__("scipy").__version__, "cases": cases, "pearson": pearson}))
