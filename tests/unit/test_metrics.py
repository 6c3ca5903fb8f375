"""Metrics helpers: the peak FLOPs behind MFU, by device name."""

from __future__ import annotations

from sophia_train.metrics import peak_flops_for_name


def test_mfu_peaks_by_device_name():
    assert peak_flops_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for_name("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for_name("NVIDIA H200") == 989e12
    assert peak_flops_for_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for_name("Some Future Accelerator") is None
