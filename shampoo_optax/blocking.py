"""Blocking: how parameters become stacks of equal-shape blocks.

Shampoo keeps one d x d statistic per dimension of each block, so large
dimensions are split into blocks of at most ``block_size`` and small ones are
merged. A parameter goes through three steps:

1. Merge: consecutive dimensions are multiplied together while the product
   stays within ``block_size``, and dimensions of size 1 are dropped. A conv
   kernel (3, 3, 64, 128) with ``block_size=1024`` becomes (576, 128).
2. Split: each merged dimension D becomes ``D // block_size`` full blocks and,
   if ``D % block_size`` is not zero, one smaller last block. The parameter
   thus falls into at most 2^rank regions, each a grid of blocks of one shape.
3. Stack: regions of the same block shape, from all parameters, are stacked
   into one array ``[n, *block_shape]``. The roots and preconditioning of a
   stack are one batched computation, whatever the number of layers that
   share the shape. Only the reshapes that pack and unpack each leaf grow
   with the number of layers.
   The leading axis is the one to shard when root work is split across
   devices.

Scalars, 1-D parameters, empty parameters and parameters with any dimension
larger than ``skip_preconditioning_dim_size_gt`` are not blocked: they get the
grafted diagonal step only, and are packed into one flat vector. The vector is
left out when it would be empty, because checkpointers such as Orbax reject
zero-size arrays.

Everything here is static: the layout is computed in Python from shapes
alone, and the split and reassembly are exact reshapes, transposes and slices.
"""

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Shape = tuple[int, ...]


def merge_small_dims(shape: Sequence[int], block_size: int) -> Shape:
    """Merge consecutive dimensions while their product stays <= block_size.

    Dimensions of size 1 are dropped, since a 1 x 1 statistic carries no
    information beyond the grafted diagonal step.
    """
    merged: list[int] = []
    product = 1
    for size in shape:
        if size == 1:
            continue
        if product * size <= block_size:
            product *= size
        else:
            if product > 1:
                merged.append(product)
            product = size
    if product > 1:
        merged.append(product)
    return tuple(merged)


@dataclasses.dataclass(frozen=True)
class Region:
    """A part of a merged parameter that splits into blocks of one shape.

    Attributes:
      starts: first index of the region along each merged dimension.
      grid: number of blocks along each merged dimension.
      block_shape: shape of each block, which is also the key of the stack
        that the region's blocks join.
      stack_offset: index of the region's first block within that stack.
    """

    starts: Shape
    grid: Shape
    block_shape: Shape
    stack_offset: int

    @property
    def num_blocks(self) -> int:
        return math.prod(self.grid)


@dataclasses.dataclass(frozen=True)
class ParameterLayout:
    """The merging and splitting of one parameter.

    Attributes:
      shape: the parameter's own shape.
      merged_shape: the shape after merging small dimensions.
      regions: the regions of the merged parameter; empty for a parameter
        that is not preconditioned.
    """

    shape: Shape
    merged_shape: Shape
    regions: tuple[Region, ...]

    @property
    def preconditioned(self) -> bool:
        return bool(self.regions)


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """The blocking of a whole parameter tree.

    Attributes:
      parameters: one layout per leaf, in ``jax.tree.leaves`` order.
      stacks: block shape -> number of blocks stacked with that shape, in a
        fixed order (first appearance), so states built from it line up.
    """

    parameters: tuple[ParameterLayout, ...]
    stacks: tuple[tuple[Shape, int], ...]

    @property
    def stack_keys(self) -> tuple[Shape, ...]:
        return tuple(key for key, _ in self.stacks)

    @property
    def diagonal_size(self) -> int:
        """Number of entries in the leaves that are not preconditioned."""
        return sum(math.prod(p.shape) for p in self.parameters if not p.preconditioned)


def _dimension_parts(size: int, block_size: int) -> list[tuple[int, int, int]]:
    """Split one dimension into (start, count, block length) parts."""
    full, remainder = divmod(size, block_size)
    parts = []
    if full:
        parts.append((0, full, block_size))
    if remainder:
        parts.append((full * block_size, 1, remainder))
    return parts


def _is_preconditioned(shape: Shape, block_size: int, skip_dim_size_gt: int) -> bool:
    if len(shape) < 2 or math.prod(shape) == 0:
        return False
    if any(size > skip_dim_size_gt for size in shape):
        return False
    return len(merge_small_dims(shape, block_size)) > 0


@functools.lru_cache(maxsize=256)
def block_layout(shapes: tuple[Shape, ...], block_size: int, skip_dim_size_gt: int) -> BlockLayout:
    """Compute the blocking of parameters with the given shapes.

    The result depends on shapes alone, so ``init`` and ``update`` compute the
    same layout independently, and the cache makes repeated traces free.
    """
    stack_counts: dict[Shape, int] = {}
    parameters = []
    for shape in shapes:
        if not _is_preconditioned(shape, block_size, skip_dim_size_gt):
            parameters.append(ParameterLayout(shape, shape, ()))
            continue

        merged = merge_small_dims(shape, block_size)
        regions = []
        per_dimension = [_dimension_parts(size, block_size) for size in merged]
        for parts in itertools.product(*per_dimension):
            starts = tuple(start for start, _, _ in parts)
            grid = tuple(count for _, count, _ in parts)
            block_shape = tuple(length for _, _, length in parts)
            offset = stack_counts.get(block_shape, 0)
            stack_counts[block_shape] = offset + math.prod(grid)
            regions.append(Region(starts, grid, block_shape, offset))
        parameters.append(ParameterLayout(shape, merged, tuple(regions)))

    return BlockLayout(tuple(parameters), tuple(stack_counts.items()))


def describe_misfit(
    shapes: tuple[Shape, ...],
    names: Sequence[str],
    block_size: int,
    skip_dim_size_gt: int,
    state_stacks: dict[Shape, int],
    state_diagonal_size: int,
) -> str:
    """Name the first leaf whose blocks do not fit a state built for other shapes.

    The leaves are added one at a time. The first one after which the layout
    needs more blocks of some shape, or more unblocked entries, than the state
    has is named. If every leaf fits, the state was built for more leaves.
    """
    for i, (shape, name) in enumerate(zip(shapes, names)):
        prefix = block_layout(shapes[: i + 1], block_size, skip_dim_size_gt)
        for block_shape, count in prefix.stacks:
            if count > state_stacks.get(block_shape, 0):
                return (
                    f"leaf {name} with shape {shape} does not fit: up to it, the updates need {count} "
                    f"blocks of shape {block_shape}, and the state has {state_stacks.get(block_shape, 0)}"
                )
        if prefix.diagonal_size > state_diagonal_size:
            return (
                f"leaf {name} with shape {shape} does not fit: up to it, the leaves that are not "
                f"preconditioned have {prefix.diagonal_size} entries, and the state has {state_diagonal_size}"
            )

    layout = block_layout(shapes, block_size, skip_dim_size_gt)
    counts = dict(layout.stacks)
    extra = []
    for key, n in state_stacks.items():
        if n > counts.get(key, 0):
            extra.append(f"{n - counts.get(key, 0)} more blocks of shape {key}")
    if state_diagonal_size > layout.diagonal_size:
        extra.append(f"{state_diagonal_size - layout.diagonal_size} more entries of leaves that are not preconditioned")
    return f"the state was built for leaves that the updates lack: it has {' and '.join(extra)}"


def _split_region(merged: jax.Array, region: Region) -> jax.Array:
    """Cut a region out of a merged parameter as ``[num_blocks, *block_shape]``."""
    rank = len(region.grid)
    limits = tuple(s + g * b for s, g, b in zip(region.starts, region.grid, region.block_shape))
    covers_all = limits == merged.shape and not any(region.starts)
    part = merged if covers_all else jax.lax.slice(merged, region.starts, limits)
    if region.num_blocks > 1:
        # (g1 * b1, g2 * b2, ...) -> (g1, b1, g2, b2, ...) -> (g1, g2, ..., b1, b2, ...)
        interleaved = tuple(itertools.chain.from_iterable(zip(region.grid, region.block_shape)))
        part = part.reshape(interleaved)
        part = part.transpose(tuple(range(0, 2 * rank, 2)) + tuple(range(1, 2 * rank, 2)))
    return part.reshape((region.num_blocks,) + region.block_shape)


def _assemble_region(blocks: jax.Array, region: Region) -> jax.Array:
    """Invert ``_split_region``: blocks ``[num_blocks, *block_shape]`` -> region."""
    rank = len(region.grid)
    region_shape = tuple(g * b for g, b in zip(region.grid, region.block_shape))
    if region.num_blocks == 1:
        return blocks.reshape(region_shape)
    part = blocks.reshape(region.grid + region.block_shape)
    # (g1, g2, ..., b1, b2, ...) -> (g1, b1, g2, b2, ...)
    order = tuple(itertools.chain.from_iterable((i, rank + i) for i in range(rank)))
    return part.transpose(order).reshape(region_shape)


def pack(leaves: Sequence[jax.Array], layout: BlockLayout) -> tuple[jax.Array, ...]:
    """Pack parameter leaves into stacks of blocks and one flat vector.

    Returns ``(*stacks, diagonal)``: one ``[n, *block_shape]`` array per entry
    of ``layout.stacks``, then the leaves that are not preconditioned,
    flattened and concatenated, or ``(*stacks,)`` alone if those leaves have
    no entries (``layout.diagonal_size == 0``). Elementwise work (grafting, momentum) then
    runs on a few large arrays rather than on every leaf, so the compiled
    update does not grow with the number of layers.
    """
    pieces: dict[Shape, list[jax.Array]] = {key: [] for key in layout.stack_keys}
    diagonal = []
    for leaf, parameter in zip(leaves, layout.parameters):
        if not parameter.preconditioned:
            diagonal.append(leaf.reshape(-1))
            continue
        merged = leaf.reshape(parameter.merged_shape)
        for region in parameter.regions:
            pieces[region.block_shape].append(_split_region(merged, region))

    # Regions were numbered in this same order, so concatenation puts each
    # region's blocks at its stack_offset.
    stacks = tuple(jnp.concatenate(pieces[key], axis=0) for key in layout.stack_keys)
    if layout.diagonal_size == 0:
        return stacks
    return stacks + (jnp.concatenate(diagonal),)


def unpack(packed: Sequence[jax.Array], leaves: Sequence[jax.Array], layout: BlockLayout) -> list[jax.Array]:
    """Invert ``pack``; ``leaves`` gives the shape and dtype of each output."""
    num_stacks = len(layout.stacks)
    by_key = dict(zip(layout.stack_keys, packed[:num_stacks]))
    flat_offset = 0
    rebuilt = []
    for leaf, parameter in zip(leaves, layout.parameters):
        size = math.prod(parameter.shape)
        if size == 0:
            rebuilt.append(jnp.zeros(parameter.shape, leaf.dtype))
            continue
        if not parameter.preconditioned:
            flat = packed[num_stacks]
            rebuilt.append(flat[flat_offset : flat_offset + size].reshape(parameter.shape).astype(leaf.dtype))
            flat_offset += size
            continue

        parts = []
        for region in parameter.regions:
            stop = region.stack_offset + region.num_blocks
            parts.append(_assemble_region(by_key[region.block_shape][region.stack_offset : stop], region))
        if len(parts) == 1:
            # One region covers the whole parameter: no scatter needed, which
            # keeps the traced program small for the common case.
            merged = parts[0]
        else:
            merged = jnp.zeros(parameter.merged_shape, parts[0].dtype)
            for region, part in zip(parameter.regions, parts):
                index = tuple(slice(start, start + size) for start, size in zip(region.starts, part.shape))
                merged = merged.at[index].set(part)
        rebuilt.append(merged.reshape(parameter.shape).astype(leaf.dtype))
    return rebuilt


@dataclasses.dataclass(frozen=True)
class StatisticSlot:
    """The location of the statistics of one dimension of one stack.

    Attributes:
      group: index of the statistic group (one ``[n, d, d]`` array).
      offset: index of the stack's first block within that group.
    """

    group: int
    offset: int


@dataclasses.dataclass(frozen=True)
class StatisticLayout:
    """Statistics grouped by (size d, root order p) for batched roots.

    Attributes:
      groups: ``(d, p, n)`` for each group: n statistics of shape d x d whose
        inverse p-th roots are computed together.
      slots: for each stack of the block layout, one slot per dimension.
      exponents: the root order p of each stack.
    """

    groups: tuple[tuple[int, int, int], ...]
    slots: tuple[tuple[StatisticSlot, ...], ...]
    exponents: tuple[int, ...]


@functools.lru_cache(maxsize=256)
def statistic_layout(layout: BlockLayout, exponent_override: int | None) -> StatisticLayout:
    """Group the statistics of a block layout by size and root order.

    A block of rank k gets the root order p = 2k (one factor per dimension,
    so the Kronecker product of the k roots is the inverse square root of the
    full-matrix statistic's approximation), unless ``exponent_override`` sets p.
    """
    group_index: dict[tuple[int, int], int] = {}
    group_counts: list[int] = []
    slots = []
    exponents = []
    for block_shape, num_blocks in layout.stacks:
        p = exponent_override or 2 * len(block_shape)
        exponents.append(p)
        stack_slots = []
        for size in block_shape:
            key = (size, p)
            if key not in group_index:
                group_index[key] = len(group_counts)
                group_counts.append(0)
            index = group_index[key]
            stack_slots.append(StatisticSlot(index, group_counts[index]))
            group_counts[index] += num_blocks
        slots.append(tuple(stack_slots))

    groups = tuple((d, p, group_counts[i]) for (d, p), i in group_index.items())
    return StatisticLayout(groups, tuple(slots), tuple(exponents))
