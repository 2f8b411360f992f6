"""Device mesh, logical-axis shardings and global batches.

The mesh has axes ("data", "fsdp", "tensor"). Parameters name their dimensions with logical
axes ("embed", "mlp", "heads", ...); `config.logical_axis_rules` maps those names to mesh axes,
so the same model runs data parallel, fully sharded or tensor parallel by changing the config.
"""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
# The batch dimension is split over every replica of the parameters' data.
BATCH_AXES = ("data", "fsdp")


def maybe_initialize_distributed(config) -> None:
    """Joins the multi-controller runtime when `config.multihost` (argument-free on Cloud TPU).

    A caller that already ran `jax.distributed.initialize(...)` with explicit arguments (CPU or
    GPU clusters without auto-detection) is left as is.
    """
    if config.multihost and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def mesh_shape(config, num_devices: int) -> tuple[int, int, int]:
    """Resolves the -1 entry of `config.mesh`; ValueError if it cannot cover `num_devices`."""
    sizes = [config.mesh[axis] for axis in MESH_AXES]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"mesh {dict(config.mesh)} does not divide the {num_devices} available devices"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(config.mesh)} has {math.prod(sizes)} devices but {num_devices} are "
            "available"
        )
    return tuple(sizes)


def make_mesh(config) -> Mesh:
    """The global mesh over all devices of all processes."""
    shape = mesh_shape(config, jax.device_count())
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_shardings(abstract_tree, mesh: Mesh, rules):
    """NamedShardings for a tree whose leaves may carry logical axis names (nn.Partitioned)."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_tree), mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data and fsdp axes; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """Assembles each process's slice of the batch into global arrays laid out by `sharding`."""
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }
