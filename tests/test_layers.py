"""LimitLayers: config <- persisted <- runtime, validated as one overlay."""

from __future__ import annotations

import pytest

from ccgroupd.errors import LimitsError
from ccgroupd.limits.layers import LimitLayers
from ccgroupd.limits.model import Limits
from ccgroupd.values import HostSize, resolving_against

MiB = 1024**2
CONFIG = Limits.from_mapping({"cpus": 4, "memory": "8G", "pids": 1000})


def test_effective_limits_layer_runtime_over_persisted_over_config() -> None:
    layers = LimitLayers(CONFIG, persisted={"cpus": 2, "memory": "1G"},
                         runtime={"memory": "512M"})

    effective = layers.effective()
    assert (effective.cpus, effective.memory_max_bytes, effective.pids_max) == (2, 512 * MiB, 1000)
    assert {name: layers.source(name) for name in ("cpus", "memory", "pids")} == {
        "cpus": "persisted", "memory": "runtime", "pids": "config"}


def test_layers_are_validated_as_one_overlay() -> None:
    # memory_high 2G is above the persisted memory 1G, but the runtime memory fixes it
    layers = LimitLayers(CONFIG, persisted={"memory": "1G", "memory_high": "2G"},
                         runtime={"memory": "4G"})
    assert layers.effective().memory_high_bytes == 2048 * MiB
    with pytest.raises(LimitsError, match="memory_high"):
        LimitLayers(CONFIG, persisted={"memory": "1G", "memory_high": "2G"}).effective()


def test_persistent_set_overrides_a_runtime_change_of_the_same_limit() -> None:
    layers = LimitLayers(CONFIG, runtime={"memory": "512M", "cpus": 1})

    after = layers.with_set({"memory": "2G"}, runtime=False)

    assert after.persisted == {"memory": "2G"}
    assert after.runtime == {"cpus": 1}
    assert after.effective().memory_max_bytes == 2048 * MiB


def test_runtime_set_reset_and_reload() -> None:
    layers = LimitLayers(CONFIG, persisted={"cpus": 2}).with_set({"cpus": 1}, runtime=True)
    assert layers.effective().cpus == 1
    assert layers.reset() == LimitLayers(CONFIG)

    reloaded = layers.with_config(Limits.from_mapping({"pids": 50}))
    assert (reloaded.effective().pids_max, reloaded.effective().cpus) == (50, 1)
    assert reloaded.persisted == {"cpus": 2}


def test_describe_lists_every_limit_with_value_and_source() -> None:
    described = LimitLayers(CONFIG, persisted={"memory": "512M"}).describe()
    assert described == {
        "cpus": {"value": 4.0, "source": "config"},
        "memory": {"value": 512 * MiB, "source": "persisted"},
        "memory_high": {"value": None, "source": "config"},
        "memory_swap": {"value": None, "source": "config"},
        "pids": {"value": 1000, "source": "config"},
        "cpu_weight": {"value": None, "source": "config"},
        "memory_min": {"value": None, "source": "config"},
        "memory_low": {"value": None, "source": "config"},
        "io_weight": {"value": None, "source": "config"},
        "cpuset_cpus": {"value": None, "source": "config"},
        "cpuset_mems": {"value": None, "source": "config"},
    }


def test_describe_shows_the_share_a_value_came_from() -> None:
    with resolving_against(HostSize(cpus=4, memory_bytes=8 * 1024**3)):
        config = Limits.from_mapping({"cpus": "50%", "memory": "8G", "pids": 1000})
        # A set layer keeps "75%" as the operator wrote it; the config layer its share too.
        described = LimitLayers(config, persisted={"memory": "75%"},
                                runtime={"memory_high": "1G"}).describe()
        overridden = LimitLayers(config, runtime={"cpus": 1}).describe()
    assert described["cpus"] == {"value": 2.0, "source": "config", "relative": "50%"}
    assert described["memory"] == {"value": 6 * 1024 * MiB, "source": "persisted",
                                   "relative": "75%"}
    assert described["memory_high"] == {"value": 1024 * MiB, "source": "runtime"}
    assert overridden["cpus"] == {"value": 1.0, "source": "runtime"}
