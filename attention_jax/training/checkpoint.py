"""Orbax checkpoints that describe themselves, and `load` for notebooks.

A checkpoint at `<workdir>/checkpoints/<step>/` holds three items:
  state   the TrainState (params, optimizer state, step, RNG), sharded as the run had it;
  data    each process's training-iterator state (when the iterator has get_state/set_state);
  config  JSON: {"train": training config, "model": {"module", "config_class", "config"}}.
The "model" entry names the Linen class and its frozen config dataclass by import path, so
`load(path)` rebuilds the model without training code and restores the parameters onto one
device, whatever mesh wrote them.
"""

import dataclasses
import importlib
import json
import logging
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


def model_spec(model: nn.Module) -> dict:
    """Import paths of the model class and its config dataclass, plus the config values."""
    config = model.config
    if not dataclasses.is_dataclass(config):
        raise ValueError(f"{type(model).__name__}.config must be a dataclass to be checkpointed")
    return {
        "module": f"{type(model).__module__}.{type(model).__qualname__}",
        "config_class": f"{type(config).__module__}.{type(config).__qualname__}",
        "config": dataclasses.asdict(config),
    }


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _tuples(value):
    """JSON turns tuples into lists; frozen config dataclasses want them back (hashable)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def build_model(spec: dict) -> nn.Module:
    """Inverse of `model_spec`, for checkpoints written by older versions of the model too.

    Saved config fields named in the config class's optional `RETIRED_FIELDS` (a tuple of
    str: fields older versions had, e.g. a loss setting since moved to the task) are dropped;
    any other field the dataclass lacks is a one-line ValueError.
    """
    config_class = _import(spec["config_class"])
    fields = dataclasses.fields(config_class)
    init_fields = {field.name for field in fields if field.init}
    # Fields the constructor does not take (init=False) are derived: dropped like retired ones.
    dropped = {field.name for field in fields if not field.init}
    dropped |= set(getattr(config_class, "RETIRED_FIELDS", ()))
    values = {}
    for name, value in _tuples(spec["config"]).items():
        if name in init_fields:
            values[name] = value
        elif name not in dropped:
            raise ValueError(
                f"checkpoint model config {spec['config_class']} has field {name!r}, which "
                f"{config_class.__name__} lacks and does not list in RETIRED_FIELDS"
            )
    return _import(spec["module"])(config=config_class(**values))


class IteratorStateHandler(ocp.CheckpointHandler):
    """Saves `iterator.get_state()` (JSON-serialisable or bytes) as one file per process."""

    def _path(self, directory: epath.Path, suffix: str) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.{suffix}"

    def save(self, directory: epath.Path, args: "IteratorStateSave"):
        state = args.iterator.get_state()
        if isinstance(state, bytes):
            self._path(directory, "bin").write_bytes(state)
        else:
            self._path(directory, "json").write_text(json.dumps(state))

    def restore(self, directory: epath.Path, args: "IteratorStateRestore" = None):
        """Returns the saved state; the caller applies it once the whole checkpoint restored."""
        if self._path(directory, "bin").exists():
            return self._path(directory, "bin").read_bytes()
        return json.loads(self._path(directory, "json").read_text())


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    iterator: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    pass


class Checkpointer:
    """The run's CheckpointManager: keep the newest N, plus the best N by an eval metric."""

    def __init__(self, config, model: nn.Module):
        self.directory = epath.Path(config.workdir).absolute() / CHECKPOINT_DIR
        policies = [ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints)]
        if config.best_metric:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[config.best_metric],
                    reverse=config.best_mode == "min",
                    n=config.keep_checkpoints,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=config.async_checkpointing,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.description = {"train": config.to_dict(), "model": model_spec(model)}
        self._unreadable = set()

    def save(self, step: int, state, iterator=None, metrics: dict | None = None) -> None:
        """Starts saving (in the background when async).

        A step already on disk is kept, unless it failed to restore: then it is replaced.
        """
        if step in self._unreadable:
            self.manager.delete(step)
            self._unreadable.discard(step)
        elif step in self.manager.all_steps():
            return
        items = {"state": ocp.args.PyTreeSave(state), "config": ocp.args.JsonSave(self.description)}
        if hasattr(iterator, "get_state"):
            items["data"] = IteratorStateSave(iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def restore_latest(self, abstract_state, iterator=None):
        """The newest checkpoint that restores, laid out like `abstract_state`; None if none.

        A checkpoint that fails (truncated files, missing items) is skipped with a warning. The
        iterator's state is set only from the checkpoint that restored.
        """
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
        for step in sorted(self.manager.all_steps(), reverse=True):
            items = {"state": ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args)}
            if hasattr(iterator, "set_state"):
                items["data"] = IteratorStateRestore()
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as error:  # Any unreadable checkpoint is skipped, whatever broke.
                message = str(error).splitlines()[0] if str(error) else ""
                logger.warning(
                    "checkpoint %s/%d failed to restore (%s: %s); trying the previous one",
                    self.directory,
                    step,
                    type(error).__name__,
                    message,
                )
                self._unreadable.add(step)
                continue
            if "data" in items:
                iterator.set_state(restored["data"])
            return restored["state"]
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


@dataclasses.dataclass
class Restored:
    """What `load` returns.

    Attributes:
      config: the run's training config.
      model: the Linen module rebuilt from its saved config (`model.config`).
      params: the "params" collection as arrays on one device: `model.apply({"params": ...})`.
      step: the optimizer step the checkpoint was taken at.
    """

    config: ml_collections.ConfigDict
    model: nn.Module
    params: Any
    step: int


def _checkpoint_directory(path: epath.Path) -> tuple[epath.Path, int | None]:
    """Accepts a workdir, its checkpoints directory, or one step's directory."""
    if (path / CHECKPOINT_DIR).is_dir():
        return path / CHECKPOINT_DIR, None
    if path.name.isdigit() and (path / "config").exists():
        return path.parent, int(path.name)
    return path, None


def load(path, step: int | None = None) -> Restored:
    """Restores a checkpoint's config, model and parameters on this process's first device.

    Args:
      path: a run's workdir, its `checkpoints` directory, or a step directory inside it.
      step: which step to load; None means the newest (or the one `path` names).
    """
    directory, path_step = _checkpoint_directory(epath.Path(path).absolute())
    step = step if step is not None else path_step
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers={
            "state": ocp.PyTreeCheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
        },
    )
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
        raise ValueError(f"no checkpoint {'' if step is None else f'at step {step} '}in {path}")
    description = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    description = description["config"]
    metadata = manager.item_metadata(step)["state"]
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        "params": jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            dict(metadata.tree)["params"],
        )
    }
    state_args = ocp.args.PyTreeRestore(
        abstract,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True,
    )
    restored = manager.restore(step, args=ocp.args.Composite(state=state_args))
    manager.close()
    return Restored(
        config=ml_collections.ConfigDict(description["train"]),
        model=build_model(description["model"]),
        params=restored["state"]["params"],
        step=step,
    )
