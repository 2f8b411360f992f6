"""Which JAX build a machine needs, for `make`: run by the system Python before the venv exists.

    python attention_jax/accelerator.py detect            # tpu, cuda or cpu
    python attention_jax/accelerator.py install tpu       # pip-installs jax[tpu] into this Python
    python attention_jax/accelerator.py check base tpu    # one line; status 2 to refuse the run

A TPU VM shows its chips as /dev/accel* (v2-v5p) or as Google PCI devices bound to vfio (v5e,
v6e); an NVIDIA GPU as the driver's /proc/driver/nvidia/version. `check` refuses to train the
paper-sized presets on a bare CPU (JAX's backend is "cpu") unless asked to (`--allow-cpu`).
Standard library only, so that it runs before anything is installed.
"""

import pathlib
import re
import subprocess
import sys

ACCELERATORS = ("tpu", "cuda", "cpu")
# The pip extra of each build; the version bounds are requirements.txt's.
JAX_EXTRAS = {"tpu": "tpu", "cuda": "cuda13", "cpu": None}
LARGE_CONFIGS = ("base", "large")  # bert_pretrain presets sized for a TPU slice or GPUs
GOOGLE_PCI_VENDOR = "0x1ae0"
GVNIC_PCI_DEVICE = "0x0042"  # Google's virtual NIC: on every GCE VM, not an accelerator


def detect(root="/") -> str:
    """ "tpu", "cuda" or "cpu": the accelerator found under the file-system `root`."""
    root = pathlib.Path(root)
    if any((root / "dev").glob("accel*")):
        return "tpu"
    for device in (root / "sys" / "bus" / "pci" / "devices").glob("*"):
        vendor, model = (device / "vendor", device / "device")
        if vendor.is_file() and vendor.read_text().strip() == GOOGLE_PCI_VENDOR:
            if not model.is_file() or model.read_text().strip() != GVNIC_PCI_DEVICE:
                return "tpu"
    if (root / "proc" / "driver" / "nvidia" / "version").is_file():
        return "cuda"
    return "cpu"


def pip_requirement(accel: str, requirements: str) -> str | None:
    """The pip requirement that adds `accel`'s JAX build (None: requirements.txt's CPU JAX).

    Args:
      accel: "tpu", "cuda" or "cpu".
      requirements: the text of requirements.txt, whose `jax` line gives the version bounds.
    """
    if accel not in ACCELERATORS:
        raise ValueError(f"ACCEL={accel!r} is not one of {', '.join(ACCELERATORS)}")
    if JAX_EXTRAS[accel] is None:
        return None
    match = re.search(r"^jax([<>=!~].*)$", requirements, re.MULTILINE)
    bounds = match.group(1).split("#")[0].strip() if match else ""
    return f"jax[{JAX_EXTRAS[accel]}]{bounds}"


def refusal(config: str, backend: str, allow_cpu: bool) -> str | None:
    """Why `make pretrain-bert CONFIG=<config>` must not run on JAX `backend`, or None."""
    if config in LARGE_CONFIGS and backend == "cpu" and not allow_cpu:
        return (
            f"CONFIG={config} is sized for TPUs or GPUs and JAX here has only the CPU; use "
            "ACCEL=tpu or ACCEL=cuda on such a machine, or ALLOW_CPU=1 to train on the CPU"
        )
    return None


def main(argv) -> int:
    command, *args = argv
    if command == "detect":
        print(detect())
    elif command == "install":
        (accel,) = args
        requirements = pathlib.Path(__file__).parents[1] / "requirements.txt"
        requirement = pip_requirement(accel, requirements.read_text())
        pip = [sys.executable, "-m", "pip", "install", "-q", "-U", requirement]
        if requirement and subprocess.run(pip).returncode:
            print(f"accelerator.py: error: pip could not install {requirement}", file=sys.stderr)
            return 2
        print(f"JAX build: {accel} ({requirement or 'CPU JAX of requirements.txt'})")
    elif command == "check":
        config, accel, *flags = args
        import jax  # noqa: PLC0415 (the venv's JAX, only for this command)

        backend = jax.default_backend()
        print(f"JAX build: {accel}; backend {backend}, {jax.device_count()} device(s)")
        reason = refusal(config, backend, "--allow-cpu" in flags)
        if reason:
            print(f"pretrain-bert: error: {reason}", file=sys.stderr)
            return 2
    else:
        print(f"accelerator.py: error: unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    del sys.path[0]  # this folder: its modules (checkpoint, data ...) must not shadow others
    try:
        sys.exit(main(sys.argv[1:]))
    except ValueError as error:
        print(f"accelerator.py: error: {error}", file=sys.stderr)
        sys.exit(2)
