"""The JAX build `make pretrain-bert` picks, on fake machines (file-system trees)."""

import pathlib

import pytest

from attention_jax import accelerator

REQUIREMENTS = (pathlib.Path(__file__).parents[1] / "requirements.txt").read_text()


def _machine(root, *files):
    for name, text in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


PCI = "sys/bus/pci/devices/0000:00:05.0"


@pytest.mark.parametrize(
    "files, expected",
    [
        ([], "cpu"),
        ([("dev/accel0", "")], "tpu"),  # TPU v2-v5p chips
        ([(f"{PCI}/vendor", "0x1ae0\n"), (f"{PCI}/device", "0x0063\n")], "tpu"),  # v5e, vfio
        ([(f"{PCI}/vendor", "0x1ae0\n"), (f"{PCI}/device", "0x0042\n")], "cpu"),  # gVNIC only
        ([("proc/driver/nvidia/version", "NVRM version: 580.65\n")], "cuda"),
    ],
    ids=["bare", "tpu-accel", "tpu-vfio", "gce-nic", "nvidia"],
)
def test_detect(tmp_path, files, expected):
    assert accelerator.detect(_machine(tmp_path, *files)) == expected


def test_pip_requirement_keeps_the_jax_bounds_of_requirements_txt():
    bounds = next(line[3:] for line in REQUIREMENTS.splitlines() if line.startswith("jax>"))
    assert accelerator.pip_requirement("tpu", REQUIREMENTS) == f"jax[tpu]{bounds}"
    assert accelerator.pip_requirement("cuda", REQUIREMENTS) == f"jax[cuda13]{bounds}"
    assert accelerator.pip_requirement("cpu", REQUIREMENTS) is None
    with pytest.raises(ValueError, match="ACCEL='gpu' is not one of tpu, cuda, cpu"):
        accelerator.pip_requirement("gpu", REQUIREMENTS)


def test_paper_sized_configs_refuse_a_bare_cpu_unless_asked():
    assert "ALLOW_CPU=1" in accelerator.refusal("base", "cpu", allow_cpu=False)
    assert "CONFIG=large" in accelerator.refusal("large", "cpu", allow_cpu=False)
    assert accelerator.refusal("base", "cpu", allow_cpu=True) is None
    assert accelerator.refusal("base", "tpu", allow_cpu=False) is None
    assert accelerator.refusal("large", "gpu", allow_cpu=False) is None
    assert accelerator.refusal("tiny", "cpu", allow_cpu=False) is None
