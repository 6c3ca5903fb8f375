"""The step meter's throughput: the compile step is timed apart, so tokens/s and MFU are the compiled model's."""

from __future__ import annotations

import math
import time

import torch

from sophia_train.meter import StepMeter


def _window(first_step_compiles: bool, first_s: float, later_s: float, steps: int = 3) -> dict:
    meter = StepMeter(torch.device("cpu"), tokens_per_step=1000, grad_clip=0.0, count_skips=False, mfu_per_token_s=1e-6,
                      first_step_compiles=first_step_compiles)
    for i in range(steps):
        time.sleep(first_s if i == 0 else later_s)
        meter.add({"loss": torch.tensor(2.0)})
    return meter.record(steps, 1e-3, 0.0, meter.means(), {})


def test_the_compile_step_is_left_out_of_tokens_per_second_and_mfu():
    rec = _window(True, first_s=0.3, later_s=0.02)
    assert rec["compile_s"] >= 0.3
    assert rec["ms_per_step"] < 100, rec  # the two compiled steps (~20 ms each), not the 0.3 s compile averaged in
    assert math.isclose(rec["mfu"], 1e-6 * rec["tokens_per_s"])
    assert rec["tokens_per_s"] > 1000 / 0.1 and rec["loss"] == 2.0  # the loss still averages all three steps
    later = StepMeter.line(rec, 10, 7)
    assert "compile" in later and "first step" in later


def test_without_compile_every_step_is_timed_and_a_later_window_has_no_compile_field():
    rec = _window(False, first_s=0.3, later_s=0.02)
    assert "compile_s" not in rec and rec["ms_per_step"] > 100  # (0.3 + 2 * 0.02) / 3
    meter = StepMeter(torch.device("cpu"), 1000, 0.0, False, first_step_compiles=True)
    meter.add({"loss": torch.tensor(1.0)})
    first = meter.record(1, 1e-3, 0.0, meter.means(), {})
    assert math.isnan(first["tokens_per_s"]) and "compile_s" in first  # a window of only the compile step: no rate
    meter.restart(), meter.restart_clock()
    meter.add({"loss": torch.tensor(1.0)})
    assert "compile_s" not in meter.record(2, 1e-3, 0.0, meter.means(), {})
