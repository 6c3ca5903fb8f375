#!/usr/bin/env python
"""Reproduce the Sophia paper's Figure 2 and the lecture's contour / saddle comparisons as PNGs.

    python scripts/toy_2d.py --out results/toy
"""

import argparse

from sophia_train.toy2d import (
    beale_loss, lecture_trajectories, plot_trajectories, saddle_loss, sophia_toy_loss, sophia_toy_trajectories,
)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/toy")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    paths = sophia_toy_trajectories(args.steps)
    for name, p in paths.items():
        print(f"fig2 {name:<7} end ({p[-1, 0]: .3f}, {p[-1, 1]: .3f})  loss {float(sophia_toy_loss(__import__('torch').tensor(p[-1]))):.4f}")
    print(plot_trajectories(sophia_toy_loss, paths, ((-1.0, 1.6), (-0.5, 5.0)), f"{args.out}/fig2_sophia_toy.png",
                            "Sophia paper Fig. 2: sharp θ[1], flat θ[2]", minimum=(1.0, 4.0)))
    contour = lecture_trajectories(beale_loss, (1.0, 1.4), 300, sgd_lr=0.002)
    print(plot_trajectories(beale_loss, contour, ((-0.5, 4.0), (-1.0, 2.0)), f"{args.out}/lecture_contours.png",
                            "Beale function: 300 steps from (1, 1.4)", minimum=(3.0, 0.5)))
    for name, p in contour.items():
        print(f"beale {name:<9} end ({p[-1, 0]: .3f}, {p[-1, 1]: .3f})")
    saddle = lecture_trajectories(saddle_loss, (-1.5, 1e-3), 120)
    print(plot_trajectories(saddle_loss, saddle, ((-2.0, 2.0), (-1.5, 4.0)), f"{args.out}/lecture_saddle.png",
                            "Saddle x² − y²: 120 steps from (−1.5, 0.001)", log_levels=False, levels=40))
