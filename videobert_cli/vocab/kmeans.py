"""Minibatch k-means (Sculley 2010) in numpy, for many independent nodes at once.

The hierarchical vocabulary trains every node of one tree level together: each node owns up
to ``k`` centres and only sees the points routed to it. :class:`NodeKMeans` keeps that state
for all nodes of a level in dense arrays, so its memory is ``O(nodes x k x D)`` plus a
reservoir sample of ``sample_size`` rows per node, whatever the number of points.

Life cycle of a :class:`NodeKMeans`:

1. ``observe(x, node)`` for every batch of the data: a reservoir sample per node
   (Vitter's algorithm R, vectorised);
2. ``initialise()``: greedy k-means++ on each node's sample. A node whose sample has fewer
   distinct points than ``k`` gets that many centres (the other slots stay invalid);
3. epochs of ``start_epoch()``, ``partial_fit(x, node)`` per batch, ``end_epoch()``. Each
   ``partial_fit`` is one minibatch step: points go to their nearest valid centre (centres
   fixed for the batch), then every centre becomes the running mean of all points it was ever
   given (per-centre learning rate ``1/count``, exactly Sculley's update, vectorised).
   ``end_epoch`` re-seeds centres that got no point in the epoch (D^2 sampling from the
   node's sample; dropped when every sample point coincides with a used centre) and marks a
   node converged when its centres moved less than ``tol`` x its sample variance.

Everything random comes from the ``numpy.random.Generator`` given to the constructor, and no
step depends on anything but the data and that generator: the same data in the same order
with the same seed gives bit-identical centres.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "kmeans_plusplus",
    "nearest_in_nodes",
    "Reservoir",
    "NodeKMeans",
    "minibatch_kmeans",
]


def _sq_dist(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Squared distances of ``points`` (n, D) to one ``centre`` (D,), exact zero for equal rows."""
    diff = points.astype(np.float64) - centre.astype(np.float64)
    return np.einsum("nd,nd->n", diff, diff)


def _d2_pick(d2: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Indices drawn with probability proportional to ``d2`` (which must have a positive sum)."""
    cum = np.cumsum(d2)
    total = cum[-1]
    picks = np.searchsorted(cum, rng.random(size) * total, side="right")
    last_positive = int(np.flatnonzero(d2 > 0)[-1])
    return np.minimum(picks, last_positive)


def kmeans_plusplus(
    sample: np.ndarray, k: int, rng: np.random.Generator, n_local_trials: int | None = None
) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with local trials as in sklearn).

    Returns up to ``k`` centres, rows of ``sample``; fewer when ``sample`` has fewer than ``k``
    distinct rows (once every point coincides with a chosen centre, seeding stops). An empty
    sample gives an empty (0, D) array.
    """
    sample = np.asarray(sample)
    n = sample.shape[0]
    if n == 0 or k <= 0:
        return np.zeros((0, sample.shape[1]), dtype=np.float32)
    trials = n_local_trials if n_local_trials is not None else 2 + int(math.log(k))
    chosen = [int(rng.integers(n))]
    d2 = _sq_dist(sample, sample[chosen[0]])
    while len(chosen) < k:
        potential = float(d2.sum())
        if potential <= 0.0:
            break  # every remaining point coincides with a centre: fewer distinct points than k
        candidates = _d2_pick(d2, rng, trials)
        best_d2, best_pot, best = None, math.inf, -1
        for c in candidates:
            new_d2 = np.minimum(d2, _sq_dist(sample, sample[c]))
            pot = float(new_d2.sum())
            if pot < best_pot:
                best_d2, best_pot, best = new_d2, pot, int(c)
        chosen.append(best)
        d2 = best_d2
    return np.ascontiguousarray(sample[chosen], dtype=np.float32)


def nearest_in_nodes(
    x: np.ndarray, node: np.ndarray, centres: np.ndarray, sq_norms: np.ndarray
) -> np.ndarray:
    """Index (0..k-1) of the nearest valid centre of each row's node.

    Args:
        x: (n, D) float32 points.
        node: (n,) int node of each point.
        centres: (num_nodes, k, D) float32.
        sq_norms: (num_nodes, k) squared norms of the centres, ``+inf`` for invalid slots.

    Points are grouped by node and each group is one matrix product, so the cost is that of
    ``n x k x D`` multiply-adds plus one Python step per distinct node in the batch.
    """
    n = x.shape[0]
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out
    if centres.shape[0] == 1:
        dist = sq_norms[0][None, :] - 2.0 * (x @ centres[0].T)
        return np.argmin(dist, axis=1)
    order = np.argsort(node, kind="stable")
    sorted_nodes = node[order]
    starts = np.flatnonzero(np.r_[True, sorted_nodes[1:] != sorted_nodes[:-1]])
    ends = np.r_[starts[1:], n]
    xs = x[order]
    labels = np.empty(n, dtype=np.int64)
    for s, e in zip(starts.tolist(), ends.tolist()):
        p = sorted_nodes[s]
        dist = sq_norms[p][None, :] - 2.0 * (xs[s:e] @ centres[p].T)
        labels[s:e] = np.argmin(dist, axis=1)
    out[order] = labels
    return out


class Reservoir:
    """A uniform random sample of up to ``size`` rows per node, over a stream of batches."""

    def __init__(self, num_nodes: int, size: int, dim: int, rng: np.random.Generator):
        self.size = int(size)
        self.dim = int(dim)
        self.rng = rng
        # np.zeros maps pages lazily: nodes that never get a point cost no physical memory.
        self.data = np.zeros((num_nodes, self.size, self.dim), dtype=np.float32)
        self.seen = np.zeros(num_nodes, dtype=np.int64)

    def add(self, x: np.ndarray, node: np.ndarray) -> None:
        """Offer the rows ``x`` (in stream order) to the reservoirs of their ``node``."""
        n = x.shape[0]
        if n == 0:
            return
        order = np.argsort(node, kind="stable")  # stable: keeps stream order within a node
        ns = node[order]
        starts = np.flatnonzero(np.r_[True, ns[1:] != ns[:-1]])
        lengths = np.diff(np.r_[starts, n])
        rank = np.arange(n) - np.repeat(starts, lengths)
        t = self.seen[ns] + rank  # 0-based position of each point in its node's stream
        u = self.rng.random(n)
        slot = np.where(t < self.size, t, np.floor(u * (t + 1)).astype(np.int64))
        keep = slot < self.size
        keys = ns[keep] * self.size + slot[keep]
        rows = order[keep]
        if keys.size:
            # Algorithm R applied in order: when a slot is hit twice, the later point wins.
            _, first_in_reversed = np.unique(keys[::-1], return_index=True)
            last = keys.size - 1 - first_in_reversed
            self.data.reshape(-1, self.dim)[keys[last]] = x[rows[last]]
        self.seen[ns[starts]] += lengths

    def sample(self, node: int) -> np.ndarray:
        return self.data[node, : min(int(self.seen[node]), self.size)]


class NodeKMeans:
    """Minibatch k-means state for ``num_nodes`` independent nodes with up to ``k`` centres each.

    Attributes:
        centres: (num_nodes, k, D) float32; slots that are not ``valid`` hold zeros.
        valid: (num_nodes, k) bool, which slots hold a centre.
        counts: (num_nodes, k) int64, Sculley's per-centre counts (points absorbed so far).
        converged: (num_nodes,) bool.
        epochs: epochs run so far; reseeded: centres re-seeded so far; dropped: centres
            dropped because no distinct point was left to re-seed them with.
    """

    def __init__(
        self,
        num_nodes: int,
        k: int,
        dim: int,
        *,
        sample_size: int,
        rng: np.random.Generator,
        tol: float = 1e-4,
    ):
        if k < 1 or num_nodes < 1 or dim < 1:
            raise ValueError("num_nodes, k and dim must be positive")
        self.k = int(k)
        self.dim = int(dim)
        self.tol = float(tol)
        self.rng = rng
        self.centres = np.zeros((num_nodes, k, dim), dtype=np.float32)
        self.valid = np.zeros((num_nodes, k), dtype=bool)
        self.counts = np.zeros((num_nodes, k), dtype=np.int64)
        self.sq_norms = np.full((num_nodes, k), np.inf, dtype=np.float32)
        self.converged = np.zeros(num_nodes, dtype=bool)
        self.variance = np.zeros(num_nodes, dtype=np.float64)
        self.reservoir = Reservoir(num_nodes, sample_size, dim, rng)
        self.epochs = 0
        self.reseeded = 0
        self.dropped = 0
        self._epoch_counts = np.zeros((num_nodes, k), dtype=np.int64)
        self._epoch_start: np.ndarray | None = None

    # -- phase 1: sampling and seeding -------------------------------------------------------
    def observe(self, x: np.ndarray, node: np.ndarray) -> None:
        self.reservoir.add(x, node)

    def initialise(self) -> None:
        """k-means++ on each node's reservoir sample; nodes without points get no centre."""
        for p in np.flatnonzero(self.reservoir.seen > 0).tolist():
            sample = self.reservoir.sample(p)
            seeds = kmeans_plusplus(sample, self.k, self.rng)
            m = seeds.shape[0]
            self.centres[p, :m] = seeds
            self.valid[p, :m] = True
            s64 = sample.astype(np.float64)
            self.variance[p] = float(((s64 - s64.mean(axis=0)) ** 2).sum(axis=1).mean())
        self.converged[self.reservoir.seen == 0] = True  # nothing to train
        self._refresh_norms()

    # -- phase 2: minibatch epochs -----------------------------------------------------------
    def start_epoch(self) -> None:
        self._epoch_counts[:] = 0
        self._epoch_start = self.centres.copy()

    def partial_fit(self, x: np.ndarray, node: np.ndarray) -> None:
        """One minibatch step with the points ``x`` of nodes ``node`` (converged nodes skip)."""
        active = ~self.converged[node]
        if not active.all():
            x, node = x[active], node[active]
        if x.shape[0] == 0:
            return
        labels = nearest_in_nodes(x, node, self.centres, self.sq_norms)
        flat = node * self.k + labels
        order = np.argsort(flat, kind="stable")
        fs = flat[order]
        starts = np.flatnonzero(np.r_[True, fs[1:] != fs[:-1]])
        slots = fs[starts]
        ends = np.r_[starts[1:], fs.size]
        m = ends - starts
        xs = x[order]
        # one slice sum per centre hit (np.add.reduceat along axis 0 is ~10x slower)
        sums = np.empty((slots.size, self.dim), dtype=np.float64)
        for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
            sums[i] = xs[s:e].sum(axis=0, dtype=np.float64)
        counts = self.counts.reshape(-1)
        centres = self.centres.reshape(-1, self.dim)
        v = counts[slots]
        new_v = v + m
        # running mean: c <- (v c + sum x) / (v + m), i.e. Sculley's eta = 1/v applied per point
        updated = (centres[slots].astype(np.float64) * v[:, None] + sums) / new_v[:, None]
        centres[slots] = updated.astype(np.float32)
        counts[slots] = new_v
        self._epoch_counts.reshape(-1)[slots] += m
        self.sq_norms.reshape(-1)[slots] = np.einsum(
            "nd,nd->n", centres[slots], centres[slots], dtype=np.float64
        ).astype(np.float32)

    def end_epoch(self) -> bool:
        """Re-seed empty centres, update convergence; True when every node has converged."""
        self.epochs += 1
        start = self._epoch_start if self._epoch_start is not None else self.centres
        training = ~self.converged
        empty = self.valid & (self._epoch_counts == 0) & training[:, None]
        reseeded_nodes = np.zeros_like(self.converged)
        for p in np.flatnonzero(empty.any(axis=1)).tolist():
            self._reseed(p, np.flatnonzero(empty[p]))
            reseeded_nodes[p] = True
        shift = ((self.centres.astype(np.float64) - start) ** 2).sum(axis=2)
        shift = np.where(self.valid, shift, 0.0).sum(axis=1)
        done = training & ~reseeded_nodes & (shift <= self.tol * self.variance)
        self.converged |= done
        self._epoch_start = None
        return bool(self.converged.all())

    def _reseed(self, p: int, slots: np.ndarray) -> None:
        sample = self.reservoir.sample(p)
        used = self.valid[p] & (self._epoch_counts[p] > 0)
        d2 = np.full(sample.shape[0], np.inf)
        for c in np.flatnonzero(used).tolist():
            d2 = np.minimum(d2, _sq_dist(sample, self.centres[p, c]))
        if not np.isfinite(d2).all():  # no used centre at all (cannot happen with points)
            d2 = np.ones(sample.shape[0])
        for s in slots.tolist():
            if sample.shape[0] == 0 or float(d2.sum()) <= 0.0:
                self.valid[p, s] = False  # no distinct point left: fewer children
                self.centres[p, s] = 0.0
                self.counts[p, s] = 0
                self.dropped += 1
                continue
            i = int(_d2_pick(d2, self.rng, 1)[0])
            self.centres[p, s] = sample[i]
            self.counts[p, s] = 0
            d2 = np.minimum(d2, _sq_dist(sample, sample[i]))
            self.reseeded += 1
        self._refresh_norms(p)

    def _refresh_norms(self, p: int | None = None) -> None:
        sel = slice(None) if p is None else slice(p, p + 1)
        c = self.centres[sel].astype(np.float64)
        norms = np.einsum("nkd,nkd->nk", c, c).astype(np.float32)
        self.sq_norms[sel] = np.where(self.valid[sel], norms, np.inf)


def minibatch_kmeans(
    x: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    batch_size: int = 1024,
    max_iter: int = 100,
    tol: float = 1e-4,
    sample_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch k-means of an in-memory array (one node); returns (centres, labels).

    ``centres`` has at most ``k`` rows (fewer when ``x`` has fewer distinct rows). Batches are
    consecutive row ranges of ``x`` visited in a random (seeded) order each epoch.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    rng = np.random.default_rng(seed)
    km = NodeKMeans(1, k, dim, sample_size=sample_size or max(8 * k, 256), rng=rng, tol=tol)
    zeros = np.zeros(n, dtype=np.int64)
    starts = list(range(0, n, batch_size))
    for s in starts:
        km.observe(x[s : s + batch_size], zeros[s : s + batch_size])
    km.initialise()
    for _ in range(max_iter):
        km.start_epoch()
        for s in rng.permutation(starts).tolist():
            km.partial_fit(x[s : s + batch_size], zeros[s : s + batch_size])
        if km.end_epoch():
            break
    labels = nearest_in_nodes(x, zeros, km.centres, km.sq_norms)
    keep = np.flatnonzero(km.valid[0])
    remap = np.full(k, -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    return km.centres[0, keep].copy(), remap[labels]
