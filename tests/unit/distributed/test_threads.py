"""train.threads=auto: the cores this process may use, split among the local ranks, fewer when the load average
says other work holds them; OMP_NUM_THREADS and an explicit number win; 0 / null leave torch's default."""

from __future__ import annotations

import pytest

from sophia_train.distributed.threads import auto_threads, choose_threads, describe, usable_cores


@pytest.mark.parametrize("cores, ranks, load, expected", [
    (2, 1, 0.1, 2),    # idle 2-core machine: both cores
    (2, 1, 1.0, 1),    # one core busy elsewhere: one thread
    (2, 1, 2.5, 1),    # all busy: never fewer than one
    (16, 1, None, 16),  # no load average (not Unix): cores
    (16, 8, 0.0, 2),   # torchrun with 8 local ranks: 16 / 8
    (16, 8, 12.0, 1),  # ... on a machine with 12 cores taken: (16 - 12) / 8 rounds to 1
    (16, 4, 6.0, 3),   # 10 free cores among 4 ranks: 2.5 rounds up to 3 (the share is 4)
    (3, 4, 0.0, 1),    # more ranks than cores
])
def test_auto_rule(cores, ranks, load, expected):
    assert auto_threads(cores, ranks, load).threads == expected


def test_auto_reason_says_what_it_saw():
    c = auto_threads(2, 1, 2.4)
    assert c.reason == "auto: 2 cores for this process, load average 2.4 leaves 0.0 free"
    assert auto_threads(16, 8, 0.0).reason == "auto: 16 cores for this process, 8 local ranks, load average 0.0"
    assert describe(c) == "torch CPU threads: 1 (auto: 2 cores for this process, load average 2.4 leaves 0.0 free)"


def test_settings_other_than_auto():
    env = {"LOCAL_WORLD_SIZE": "2"}
    assert choose_threads(3, env).threads == 3
    assert choose_threads("3", env).threads == 3
    assert choose_threads(0, env).threads is None and choose_threads(None, env).threads is None
    assert choose_threads("auto", {"OMP_NUM_THREADS": "5"}).threads == 5  # the user's own choice
    got = choose_threads("auto", env, cores=lambda: 8, load=lambda: 0.0)
    assert (got.threads, got.reason) == (4, "auto: 8 cores for this process, 2 local ranks, load average 0.0")


def test_usable_cores_honours_a_cgroup_quota(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs
    assert usable_cores(quota) == 1
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == usable_cores(tmp_path / "absent") >= 1


def test_a_setting_that_is_no_count_is_refused():
    from conftest import compose
    from sophia_train.config import ConfigError, validate

    assert compose(["+model=tiny", "optim=adamw"]).train.threads == "auto"  # the default
    for bad in ("many", "-2"):
        with pytest.raises(ConfigError, match="train.threads must be >= 1, auto"):
            validate(compose(["+model=tiny", "optim=adamw", f"train.threads={bad}"]))
