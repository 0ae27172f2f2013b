"""Coalition designs and Shapley solvers for the model-agnostic SHAP estimators.

Everything here is plain numpy and independent of the model: a *design* is a boolean
matrix of coalitions ``(C, M)`` (True = the feature keeps the explained row's value),
and a solver turns the values ``v`` of those coalitions, ``(N, C)``, together with
``v(empty)`` and ``v(full)`` (each ``(N,)``), into Shapley values ``(N, M)``. The design
is shared by every explained row, so one design costs one set of batched model calls and
one small matrix product for all rows.

shap's own explainers build their coalitions one row and one sample at a time in Python
(``KernelExplainer.addsample``, the permutation loop); these helpers exist to build the
same mathematical objects once, as arrays.
"""

from __future__ import annotations

from math import comb, lgamma

import numpy as np

#: Largest number of features (or groups) the exact estimator enumerates (2^M coalitions).
MAX_EXACT_FEATURES = 14


# --------------------------------------------------------------------------- exact


def all_coalitions(m: int) -> np.ndarray:
    """Every coalition of ``m`` players as a bool matrix ``(2**m, m)``, row k = bits of k."""
    codes = np.arange(2**m, dtype=np.int64)
    return ((codes[:, None] >> np.arange(m, dtype=np.int64)) & 1).astype(bool)


def shapley_weight(m: int, s: np.ndarray | int) -> np.ndarray:
    """``s! (m - s - 1)! / m!``: the weight of a coalition of size ``s`` not holding ``j``."""
    s = np.asarray(s, dtype=np.float64)
    lg = np.vectorize(lgamma)
    return np.exp(lg(s + 1) + lg(m - s) - lgamma(m + 1))


def exact_weight_matrix(coalitions: np.ndarray) -> np.ndarray:
    """The ``(2**m, m)`` matrix W with ``phi = v @ W`` over all coalitions.

    ``phi_j = sum_S v(S) * (w(|S| - 1) if j in S else -w(|S|))``: the closed form of
    ``sum_{S not holding j} w(|S|) (v(S + j) - v(S))`` regrouped by coalition.
    """
    m = coalitions.shape[1]
    size = coalitions.sum(axis=1)
    w_in = shapley_weight(m, np.clip(size - 1, 0, m - 1))
    w_out = shapley_weight(m, np.clip(size, 0, m - 1))
    return np.where(coalitions, w_in[:, None], -w_out[:, None])


def exact_shapley(v_all: np.ndarray, coalitions: np.ndarray) -> np.ndarray:
    """Exact Shapley values ``(N, m)`` from the values of every coalition ``(N, 2**m)``."""
    return v_all @ exact_weight_matrix(coalitions)


# --------------------------------------------------------------------------- kernel


def kernel_size_mass(m: int) -> np.ndarray:
    """Total Shapley-kernel mass of each coalition size ``s = 1 .. m-1`` (index s-1).

    The kernel weight of one coalition of size s is ``(m-1) / (C(m,s) s (m-s))``; summed
    over the ``C(m,s)`` coalitions of that size it is ``(m-1) / (s (m-s))``.
    """
    s = np.arange(1, m, dtype=np.float64)
    return (m - 1) / (s * (m - s))


def _encode(masks: np.ndarray) -> np.ndarray:
    """One hashable key per coalition row (bytes of the packed bits)."""
    packed = np.packbits(masks, axis=1)
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()


def _distinct_subsets(rng: np.random.Generator, m: int, size: int, count: int,
                      paired: bool) -> np.ndarray:
    """``count`` distinct coalitions of ``size`` players drawn uniformly without replacement.

    With ``paired`` each draw also brings its complement (Covert & Lee 2021), so the result
    holds ``count`` pairs, ``2 * count`` rows, pairs adjacent.
    """
    chosen: list[np.ndarray] = []
    seen: set[bytes] = set()
    need = count
    while need > 0:
        draw = max(2 * need, 16)
        order = np.argsort(rng.random((draw, m)), axis=1)[:, :size]
        masks = np.zeros((draw, m), dtype=bool)
        np.put_along_axis(masks, order, True, axis=1)
        for row in masks:
            key = row.tobytes()
            ckey = (~row).tobytes()
            if key in seen or (paired and ckey in seen):
                continue
            seen.add(key)
            if paired:
                seen.add(ckey)
                chosen.append(np.stack([row, ~row]))
            else:
                chosen.append(row[None])
            need -= 1
            if need == 0:
                break
    return np.concatenate(chosen)


def kernel_design(m: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions ``(C, m)`` (empty and full excluded) and their kernel weights ``(C,)``.

    Sizes are handled in complementary pairs (s, m-s), heaviest kernel mass first. A pair
    of sizes is enumerated completely when its share of the remaining budget, in proportion
    to its kernel mass, covers all of its coalitions (shap's "complete subsets" rule). The
    budget left is spread over the remaining sizes in proportion to their mass (stratified
    by size, so no budget is lost to the randomness of the size draw) and filled with
    distinct coalitions drawn with their complements (paired / antithetic sampling). Within
    a sampled size each coalition carries an equal share of that size's kernel mass, so the
    weighted least squares sees the same total weight per size as with full enumeration.

    Ref. Lundberg & Lee 2017 (the Shapley kernel); Covert & Lee 2021 (paired sampling).
    """
    mass = kernel_size_mass(m)
    n_total = 2**m - 2 if m < 63 else np.inf
    if budget >= n_total:
        masks = all_coalitions(m)[1:-1]
        size = masks.sum(axis=1)
        return masks, mass[size - 1] / np.array([comb(m, int(s)) for s in size], dtype=np.float64)

    # Pair index p covers sizes p+1 and m-(p+1); the middle size of an even m stands alone.
    pairs = [(s, m - s) if s != m - s else (s,) for s in range(1, m // 2 + 1)]
    pair_mass = np.array([sum(mass[s - 1] for s in p) for p in pairs])
    pair_count = np.array([sum(comb(m, s) for s in p) for p in pairs], dtype=np.float64)

    blocks: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    left = float(budget)
    first_open = 0
    for p, sizes in enumerate(pairs):
        share = left * pair_mass[p] / pair_mass[p:].sum()
        if share + 1e-9 < pair_count[p]:
            break
        for s in sizes:
            rows = _fixed_size(m, s)
            blocks.append(rows)
            weights.append(np.full(len(rows), mass[s - 1] / comb(m, s)))
        left -= pair_count[p]
        first_open = p + 1

    open_pairs = list(range(first_open, len(pairs)))
    if open_pairs and left >= 2:
        # Round the per-size allocation down to whole complementary pairs, then hand the
        # leftover pairs to the heaviest sizes so the budget is used exactly.
        n_pairs = int(left // 2)
        share = pair_mass[open_pairs] / pair_mass[open_pairs].sum() * n_pairs
        alloc = np.floor(share).astype(int)
        for k in np.argsort(-(share - alloc))[: n_pairs - alloc.sum()]:
            alloc[k] += 1
        for p, a in zip(open_pairs, alloc, strict=True):
            a = int(min(a, pair_count[p] // 2))
            if a == 0:
                continue
            s = pairs[p][0]
            rows = _distinct_subsets(rng, m, s, a, paired=True)
            blocks.append(rows)
            # Each drawn pair stands for a/C(m,s) of size s and of size m-s alike.
            per = pair_mass[p] / (2 * a)
            weights.append(np.full(len(rows), per))
    return np.concatenate(blocks), np.concatenate(weights)


def _fixed_size(m: int, s: int) -> np.ndarray:
    """Every coalition of exactly ``s`` players, ``(C(m, s), m)``."""
    from itertools import combinations

    idx = np.array(list(combinations(range(m), s)), dtype=np.int64)
    rows = np.zeros((len(idx), m), dtype=bool)
    np.put_along_axis(rows, idx, True, axis=1)
    return rows


def kernel_solve(masks: np.ndarray, weights: np.ndarray, v: np.ndarray, v_empty: np.ndarray,
                 v_full: np.ndarray) -> np.ndarray:
    """Weighted least squares for the Shapley values with the efficiency constraint exact.

    Minimises ``sum_c w_c (v_c - v_empty - z_c . phi)^2`` subject to
    ``sum(phi) = v_full - v_empty`` for every row at once (the design is shared, so the
    normal matrix is factorised once). Returns ``(N, m)``.

    Ref. Lundberg & Lee 2017 (KernelSHAP); Covert & Lee 2021 (constrained solution).
    """
    z = masks.astype(np.float64)
    a = z.T @ (weights[:, None] * z)
    b = (z.T * weights) @ (v - v_empty[:, None]).T  # (m, N)
    ones = np.ones((a.shape[0], 1))
    try:
        sol = np.linalg.solve(a, np.concatenate([b, ones], axis=1))
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(a, np.concatenate([b, ones], axis=1), rcond=None)[0]
    phi_u, a_inv_1 = sol[:, :-1], sol[:, -1:]
    excess = phi_u.sum(axis=0) - (v_full - v_empty)  # (N,)
    phi = phi_u - a_inv_1 * (excess / a_inv_1.sum())[None, :]
    return phi.T


# --------------------------------------------------------------------------- permutation


def antithetic_permutations(m: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """``2 * n_pairs`` permutations of ``m`` players: each one followed by its reverse.

    Ref. Mitchell et al. 2022 (antithetic permutation sampling for Shapley values).
    """
    fwd = np.argsort(rng.random((n_pairs, m)), axis=1)
    both = np.empty((2 * n_pairs, m), dtype=np.int64)
    both[0::2] = fwd
    both[1::2] = fwd[:, ::-1]
    return both


def permutation_design(perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct proper, non-empty prefixes of ``perms`` and, per prefix, its index.

    Returns the coalitions ``(C, m)`` and ``index`` ``(P, m + 1)`` where ``index[p, k]``
    is the row of the coalition formed by the first k players of permutation p (-1 for
    the empty coalition, -1 for the full one).
    """
    p, m = perms.shape
    ranks = np.empty_like(perms)
    np.put_along_axis(ranks, perms, np.arange(m)[None, :].repeat(p, axis=0), axis=1)
    # prefix k of permutation p holds player j iff rank(j) < k
    k = np.arange(1, m)
    prefixes = ranks[:, None, :] < k[None, :, None]  # (P, m-1, m)
    flat = prefixes.reshape(-1, m)
    keys = _encode(flat)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    coalitions = flat[first]
    index = np.empty((p, m + 1), dtype=np.int64)
    index[:, 0] = -2
    index[:, m] = -1
    index[:, 1:m] = inverse.reshape(p, m - 1)
    return coalitions, index


def permutation_solve(perms: np.ndarray, index: np.ndarray, v: np.ndarray,
                      v_empty: np.ndarray, v_full: np.ndarray) -> np.ndarray:
    """Average marginal contributions along the permutations, ``(N, m)``.

    Each permutation's contributions telescope to ``v_full - v_empty``, so the estimate
    satisfies efficiency exactly whatever the number of permutations.
    """
    ext = np.concatenate([v, v_empty[:, None], v_full[:, None]], axis=1)  # index -2, -1
    chain = ext[:, index]  # (N, P, m+1): value after adding the first k players
    contrib = np.diff(chain, axis=2)  # (N, P, m): contribution of the k-th player added
    ranks = np.argsort(perms, axis=1)
    return np.take_along_axis(contrib, ranks[None], axis=2).mean(axis=1)


# --------------------------------------------------------------------------- permutations x background


def background_permutations(m: int, b: int, samples: int, rng: np.random.Generator
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Orderings ``(P, m)`` and one background row index per ordering ``(P,)``.

    ``P`` is about ``samples / (m - 1)`` (each ordering costs ``m - 1`` forward passes),
    even, and at least ``b`` so every background row is walked at least once. Orderings
    come in antithetic pairs (each followed by its reverse); the background rows are dealt
    out in shuffled rounds, so the two orderings of a pair walk different rows.

    Ref. Mitchell et al. 2022 (antithetic permutations); Lundberg & Lee 2017.
    """
    p = max(2, int(round(samples / (m - 1))), b)
    p += p % 2
    perms = antithetic_permutations(m, p // 2, rng)
    rounds = -(-p // b)
    bg_index = np.concatenate([rng.permutation(b) for _ in range(rounds)])[:p]
    return perms, bg_index


def permutation_prefixes(perms: np.ndarray) -> np.ndarray:
    """The proper non-empty prefixes of every ordering, ``(P * (m - 1), m)``, in order."""
    m = perms.shape[1]
    ranks = np.argsort(perms, axis=1)
    k = np.arange(1, m)
    return (ranks[:, None, :] < k[None, :, None]).reshape(-1, m)


def chain_contributions(perms: np.ndarray, bg_index: np.ndarray, v: np.ndarray,
                        f_bg: np.ndarray, v_full: np.ndarray) -> np.ndarray:
    """Marginal contributions ``(N, P, m)`` (by player) of single-background-row walks.

    ``v`` ``(N, P * (m - 1))`` holds ``f(x_prefix, b_rest)`` for each ordering's prefixes
    with the row's background row ``b = bg_index[n, p]``; ``f_bg`` ``(N, B)`` is ``f(b)``
    and ``v_full`` ``(N,)`` is ``f(x)``. Each walk's contributions sum to ``f(x) - f(b)``.
    """
    n = len(v)
    p, m = perms.shape
    rows = np.arange(n)[:, None]
    chain = np.concatenate([f_bg[rows, bg_index][:, :, None], v.reshape(n, p, m - 1),
                            np.broadcast_to(v_full[:, None, None], (n, p, 1))], axis=2)
    contrib = np.diff(chain, axis=2)  # by position
    return np.take_along_axis(contrib, np.argsort(perms, axis=1)[None], axis=2)


def background_average(contrib: np.ndarray, bg_index: np.ndarray, b: int) -> np.ndarray:
    """Shapley values ``(N, m)``: contributions averaged per background row, then uniformly
    over all ``b`` rows (each walked at least once), so they sum to
    ``f(x) - mean_b f(b)`` exactly."""
    rows = np.arange(len(contrib))[:, None]
    counts = np.stack([np.bincount(r, minlength=b) for r in bg_index]).astype(np.float64)
    weight = 1.0 / (b * counts[rows, bg_index])
    return np.einsum("npm,np->nm", contrib, weight)
