"""Metrics to TensorBoard event files and the console, and the progress bar (host 0 only)."""

import time

import jax
import tensorboardX
import tqdm


class MetricWriter:
    """Writes scalars to `<workdir>/tensorboard` and prints one line per call."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled and jax.process_index() == 0
        self._tb = tensorboardX.SummaryWriter(f"{workdir}/tensorboard") if self.enabled else None

    def write_scalars(self, step: int, prefix: str, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self._tb.add_scalar(f"{prefix}/{name}", value, step)
        line = ", ".join(f"{name}={value:.6g}" for name, value in sorted(scalars.items()))
        tqdm.tqdm.write(f"[{prefix}] step {step}: {line}")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Throughput:
    """Steps/s, tokens/s and model FLOPs utilisation between two calls of `rates`.

    MFU = achieved model FLOP/s / peak FLOP/s of all devices, where achieved = training FLOPs
    per example (forward + backward, e.g. 6 · parameters · tokens for a Transformer) × examples/s.
    """

    def __init__(self, batch_size: int, flops_per_example=None, peak_flops_per_device=None):
        self.batch_size = batch_size
        self.flops_per_example = flops_per_example
        self.peak_flops = peak_flops_per_device and peak_flops_per_device * jax.device_count()
        self.reset()

    def reset(self) -> None:
        self._start, self._steps, self._tokens = time.perf_counter(), 0, 0

    def add(self, steps: int, tokens: int) -> None:
        self._steps += steps
        self._tokens += tokens

    def rates(self) -> dict[str, float]:
        """Rates since the last reset (which this call starts anew)."""
        seconds = max(time.perf_counter() - self._start, 1e-9)
        steps_per_sec = self._steps / seconds
        rates = {"steps_per_sec": steps_per_sec}
        if self._tokens:
            rates["tokens_per_sec"] = self._tokens / seconds
        if self.flops_per_example and self.peak_flops:
            achieved = self.flops_per_example * self.batch_size * steps_per_sec
            rates["mfu"] = achieved / self.peak_flops
        self.reset()
        return rates


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm.tqdm:
    """A steps bar (tqdm adds the ETA); `set_postfix` carries tokens/s and MFU."""
    return tqdm.tqdm(
        total=total,
        initial=initial,
        unit="step",
        dynamic_ncols=True,
        disable=not enabled or jax.process_index() != 0,
    )
