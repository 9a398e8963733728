"""Energy used by training: measured where the hardware reports it, estimated otherwise, always saying which.

Methods, best first (``method`` in ``train/metadata.json``, which the model card shows):

* ``measured-nvml``: on NVIDIA GPUs, each process's GPU's total-energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded; Volta and later) read at
  the start and end of the training loop, summed over processes. Needs the ``pynvml`` module
  (``pip install nvidia-ml-py``). GPU boards only: the host's CPUs and memory are not counted.
* ``measured-rapl``: on CPUs whose Intel RAPL counters are readable
  (``/sys/class/powercap/intel-rapl:N/energy_uj``, microjoules per CPU package; AMD Zen exposes the same
  files). Often readable by root only. Read by one process per machine (processes on one machine share the
  packages), summed over machines; wrap-around (``max_energy_range_uj``) is handled once per reading.
* ``estimated-tdp``: wall time x an assumed average draw per device (:data:`ASSUMED_POWER_W`) x devices.
  Nothing is measured.

A measured figure covers the training loop only (not loading the model). When a run resumes, the energy of
the segments before is carried in the checkpoint; a run whose segments were not all measured the same way is
reported as estimated over its whole wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langkit.utils import get_logger

log = get_logger("train")

POWERCAP = Path("/sys/class/powercap")
# Assumed average draw while training, for the estimate (W): a desktop-class CPU package, and an H100/H200
# SXM at its rated board power. Nothing is measured.
ASSUMED_POWER_W = {"cpu": 65.0, "cuda": 700.0, "mps": 30.0}
MEASURED_NVML = "measured-nvml"
MEASURED_RAPL = "measured-rapl"
ESTIMATED = "estimated-tdp"


def read_rapl(root: Path = POWERCAP) -> dict[str, tuple[int, int]] | None:
    """{zone: (energy_uj, max_energy_range_uj)} of the top-level RAPL zones (``intel-rapl:N``, one per CPU
    package; their sub-zones ``intel-rapl:N:M`` are parts of it and are not added again), or None when
    there is none or one cannot be read."""
    zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1) if root.is_dir() else []
    if not zones:
        return None
    out = {}
    for zone in zones:
        try:
            energy = int((zone / "energy_uj").read_text().strip())
            max_path = zone / "max_energy_range_uj"
            max_range = int(max_path.read_text().strip()) if max_path.exists() else 0
        except (OSError, ValueError):
            return None
        out[zone.name] = (energy, max_range)
    return out


def rapl_joules(start: dict[str, tuple[int, int]], end: dict[str, tuple[int, int]]) -> float:
    """Joules between two :func:`read_rapl` readings, summed over zones, a counter that wrapped counted
    once round."""
    total = 0
    for zone, (before, max_range) in start.items():
        after = end[zone][0]
        delta = after - before
        if delta < 0 and max_range:
            delta += max_range
        total += max(delta, 0)
    return total / 1e6


def _nvml_handle(device_index: int) -> Any:
    try:
        import pynvml
        import torch

        try:  # NVML numbers all GPUs; CUDA only the visible ones (CUDA_VISIBLE_DEVICES): torch maps one to the other
            nvml_index = int(torch.cuda._get_nvml_device_index(device_index))
        except Exception:
            nvml_index = device_index
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where the GPU does not report energy
        return handle
    except Exception:  # no pynvml, no driver, or an older GPU: fall back to another method
        return None


def _nvml_millijoules(handle: Any) -> int:
    import pynvml

    return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))


@dataclass
class EnergyMeter:
    """Reads this process's energy counter at :meth:`start` and :meth:`stop`. ``device_type`` is the
    training device's type (``cuda``, ``cpu``); ``measure_cpu`` is False on all but one process of each
    machine (RAPL counts the whole machine's packages)."""

    device_type: str
    device_index: int = 0
    measure_cpu: bool = True
    powercap: Path | None = None
    """The powercap folder; None means :data:`POWERCAP`."""

    def start(self) -> EnergyMeter:
        self.method = ESTIMATED
        self._nvml: Any = None
        self._rapl: dict[str, tuple[int, int]] | None = None
        if self.device_type == "cuda":
            self._nvml = _nvml_handle(self.device_index)
            if self._nvml is not None:
                self.method = MEASURED_NVML
                self._start_mj = _nvml_millijoules(self._nvml)
        elif self.device_type == "cpu":
            self._rapl = read_rapl(self.powercap or POWERCAP)
            if self._rapl is not None:
                self.method = MEASURED_RAPL
        self._t0 = time.perf_counter()
        return self

    def tick(self) -> None:
        """Add up the RAPL counters' progress since the last reading. A package's counter wraps every 30-60
        minutes under load (at about 262 kJ), and a difference can only tell one wrap: the training loop
        calls this every step, so no two readings are a wrap apart."""
        if self.method != MEASURED_RAPL:
            return
        now = read_rapl(self.powercap or POWERCAP)
        if now is None or now.keys() != (self._rapl or {}).keys():
            log.warning("RAPL counters became unreadable during training; energy estimated instead")
            self.method = ESTIMATED
            return
        assert self._rapl is not None
        self._rapl_joules = getattr(self, "_rapl_joules", 0.0) + rapl_joules(self._rapl, now)
        self._rapl = now

    def stop(self) -> tuple[str, float]:
        """(method, joules measured by this process so far); joules is 0.0 when estimated (see :func:`report`).
        May be called more than once (at every checkpoint)."""
        if self.method == MEASURED_NVML:
            return self.method, (_nvml_millijoules(self._nvml) - self._start_mj) / 1e3
        self.tick()
        if self.method == MEASURED_RAPL:
            return self.method, getattr(self, "_rapl_joules", 0.0) if self.measure_cpu else 0.0
        return ESTIMATED, 0.0


def energy_estimate(wall_time_s: float, device_type: str, devices: int = 1) -> dict[str, Any]:
    """The estimate: ``wall_time_s`` x the assumed power of ``device_type`` x ``devices``."""
    watts = ASSUMED_POWER_W.get(device_type, ASSUMED_POWER_W["cpu"])
    joules = wall_time_s * watts * devices
    return {
        "kwh": round(joules / 3.6e6, 6),
        "joules": round(joules, 1),
        "method": ESTIMATED,
        "assumed_power_w": watts,
        "devices": devices,
        "note": f"estimated: wall time x assumed {device_type.upper()} power ({watts:g} W) x {devices} "
                "device(s); not measured",
    }


def report(method: str, joules: float, wall_time_s: float, device_type: str, devices: int) -> dict[str, Any]:
    """The ``energy`` entry of ``metadata.json`` for a run whose training loop ``method`` measured ``joules``
    in all (over every process and segment), or the estimate when ``method`` is ``estimated-tdp``."""
    if method == ESTIMATED:
        return energy_estimate(wall_time_s, device_type, devices)
    source = {MEASURED_NVML: "NVML total-energy counter of each GPU (boards only, not the host)",
              MEASURED_RAPL: "Intel RAPL package counters (/sys/class/powercap) of each machine"}[method]
    return {"kwh": round(joules / 3.6e6, 6), "joules": round(joules, 1), "method": method, "devices": devices,
            "note": f"measured: {source}, over the training loop"}
