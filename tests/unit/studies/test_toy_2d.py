"""The paper's 2-D toy (Fig. 2) and the lecture's saddle, run with the project's optimizer classes."""

from __future__ import annotations

import numpy as np
import torch

from sophia_train.studies.toy_2d import lecture_trajectories, plot_trajectories, saddle_loss, sophia_toy_loss, sophia_toy_trajectories


def loss_at(p):
    return float(sophia_toy_loss(torch.tensor(p)))


def test_figure2_story_holds():
    paths = sophia_toy_trajectories(steps=30)
    np.testing.assert_allclose(paths["Sophia"][-1], [1.0, 4.0], atol=1e-6)  # the minimum, in a few steps
    np.testing.assert_allclose(paths["Newton"][-1], [0.0, 4.0], atol=1e-6)  # Newton: the saddle point
    assert loss_at(paths["Sophia"][-1]) < 1e-10
    for name in ("GD", "SignGD", "Adam"):
        assert loss_at(paths[name][-1]) > 1e-3, name
    assert abs(paths["GD"][-1][1] - 4.0) > 2.0  # GD: slow along the flat direction
    bounce = np.abs(np.diff(paths["SignGD"][-10:, 0]))
    assert bounce.min() > 0.05  # SignGD: keeps bouncing across the sharp valley


def test_saddle_escape(tmp_path):
    paths = lecture_trajectories(saddle_loss, (-1.5, 1e-3), 120)
    assert abs(paths["SGD"][-1][1]) < 0.1  # plain SGD does not break the symmetry in 120 steps
    for name in ("Adam", "Sophia", "S3", "Lion", "RMSprop"):
        assert abs(paths[name][-1][1]) > 1.0, name
    png = plot_trajectories(saddle_loss, paths, ((-2, 2), (-1.5, 4)), tmp_path / "saddle.png", "saddle", log_levels=False)
    assert png.stat().st_size > 10_000
