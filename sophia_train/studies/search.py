"""Hyperparameter search shared by the studies: coordinate descent (a line search per hyperparameter,
its grid extended while the best sits on an edge, then a second pass at v/2, v, 2v) and ``settle``, which
walks the result to a checked local optimum of its x1/2 and x2 neighbours. ``loss_of(point)`` trains (or
reuses) one run and returns its final val loss; nothing here knows about training."""

from __future__ import annotations

EDGE_EXTENSIONS = 3  # how many times a line search may step past the edge of its grid


def line_search(values: list[float], loss_of, extensions: int = EDGE_EXTENSIONS) -> float:
    """The value of lowest loss among ``values``, extending by x2 past an edge while the best sits on it
    (at most ``extensions`` times)."""
    losses = {v: loss_of(v) for v in values}
    for _ in range(extensions):
        best = min(losses, key=losses.get)
        if best == max(losses):
            losses[best * 2] = loss_of(best * 2)
        elif best == min(losses):
            losses[best / 2] = loss_of(best / 2)
        else:
            break
    return min(losses, key=losses.get)


def tune(space: dict[str, list[float]], loss_of, extensions: int = EDGE_EXTENSIONS) -> dict[str, float]:
    """Coordinate descent over ``space`` (see the module docstring); ``loss_of(point)`` trains or reuses a run."""
    point = {k: grid[len(grid) // 2] for k, grid in space.items()}
    for sweep in range(1 if len(space) == 1 else 2):
        before = dict(point)
        for name, grid in space.items():
            values = grid if sweep == 0 else [point[name] / 2, point[name], point[name] * 2]
            point[name] = line_search(sorted(values), lambda v, name=name: loss_of({**point, name: v}), extensions)
        if sweep > 0 and point == before:
            break
    return point


def tune_runs(space: dict[str, list[float]]) -> int:
    """Distinct runs of ``tune`` over ``space`` when no grid is extended: every grid point in the
    first sweep (their shared centre once), then at most two new neighbours per hyperparameter but the last
    in the second (none when the first moved nothing; no second sweep for a single hyperparameter)."""
    n, points = len(space), sum(len(grid) for grid in space.values())
    return points + n - 1


JOINT_STEPS = (1, 2, 3)  # a joint move scales both hyperparameters by 2**k (or one by 2**k, the other by 2**-k)
JOINT_POINTS = 4 * len(JOINT_STEPS)  # the four directions of each step: what one pair's joint search may run


def joint_moves(point: dict[str, float], pair: tuple[str, str]) -> list[dict[str, float]]:
    """The points a joint search tries for ``pair`` = (a, b): a and b scaled together by 2**k and 2**-k for k in
    ``JOINT_STEPS``, in all four directions (``JOINT_POINTS`` of them)."""
    a, b = pair
    out = []
    for sa, sb in ((1, 1), (-1, -1), (1, -1), (-1, 1)):
        for k in JOINT_STEPS:
            out.append({**point, a: point[a] * 2.0 ** (sa * k), b: point[b] * 2.0 ** (sb * k)})
    return out


def joint_search(point: dict[str, float], loss_of, pairs: tuple[tuple[str, str], ...]) -> dict[str, float]:
    """Move ``point`` to the best of its joint moves (``joint_moves``) for each pair in turn, if better: coordinate
    descent cannot cross a valley that runs diagonally (Sophia-G's LR helps only with a longer warmup, and a longer
    warmup only with a larger LR: each alone looked worse, so one-at-a-time search stopped 0.4 nats short)."""
    for pair in pairs:
        if not all(key in point for key in pair):
            continue
        point = _better_of(point, joint_moves(point, pair), loss_of) or point
    return point


def _better_of(point: dict[str, float], near: list[dict[str, float]], loss_of) -> dict[str, float] | None:
    """The best of ``near`` if its loss is below ``point``'s, else None."""
    centre = loss_of(point)
    losses = [loss_of(p) for p in near]
    best = min(range(len(near)), key=losses.__getitem__)
    return near[best] if losses[best] < centre else None


def settle(point: dict[str, float], loss_of, max_moves: int = 20) -> dict[str, float]:
    """Move ``point`` to its best x1/2 or x2 neighbour in any one hyperparameter while that one is better (at
    most ``max_moves`` times), so a search ends at a checked local optimum: coordinate descent's last sweep
    leaves the neighbours of hyperparameters searched before its last move untried."""
    for _ in range(max_moves):
        better = _better_of(point, [{**point, key: point[key] * factor} for key in point for factor in (0.5, 2.0)], loss_of)
        if better is None:
            break
        point = better
    return point
