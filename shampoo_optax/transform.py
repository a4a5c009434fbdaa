"""The Shampoo transformation and the ready-made optimizer.

For a gradient block G of rank k, Shampoo keeps one statistic per dimension.
For a matrix these are

    L <- beta2 L + (1 - beta2) G G^T,    R <- beta2 R + (1 - beta2) G^T G,

and the preconditioned direction is L^(-1/p) G R^(-1/p) with p = 2k = 4. For
rank k, the statistic of dimension i contracts G with itself over every other
dimension, and the direction applies each factor's root along its dimension.

References:
  Gupta, Koren and Singer, "Shampoo: Preconditioned Stochastic Tensor
  Optimization", ICML 2018.
  Anil, Gupta, Koren, Regan and Singer, "Scalable Second Order Optimization
  for Deep Learning", 2020 (blocking, grafting, delayed root refreshes).
"""

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from shampoo_optax import blocking, grafting, matrix_roots, validation

_HIGHEST = jax.lax.Precision.HIGHEST


class ShampooState(NamedTuple):
    """State of ``scale_by_shampoo``: arrays only.

    Attributes:
      count: number of updates so far (int32 scalar).
      statistics: one ``[n, d, d]`` array per statistic group: the moving
        averages (or sums, with ``beta2 = 1``) of the Kronecker factors.
      preconditioners: inverse p-th roots of the bias-corrected statistics,
        shapes as ``statistics``; identity until the first refresh.
      root_errors: ``[n]`` float32 per group: the residual of the root
        computed at the last refresh, accepted or not (NaN for a non-finite
        root); zero before the first refresh.
      root_iterations: ``[n]`` int32 per group: Newton iterations used at the
        last refresh (zero for eigendecompositions).
      root_failures: ``[n]`` int32 per group: how many refreshes rejected a
        root (non-finite or residual above ``root_error_threshold``) and kept
        the previous one.
      second_moments: diagonal second moments of the grafting method, empty
        for ``"sgd"`` and ``"none"``. They are packed as ``blocking.pack``
        packs gradients: one array per block stack, then one flat vector for
        the other leaves.
      momentum: first moments of the grafted update, packed the same way.
    """

    count: jax.Array
    statistics: tuple[jax.Array, ...]
    preconditioners: tuple[jax.Array, ...]
    root_errors: tuple[jax.Array, ...]
    root_iterations: tuple[jax.Array, ...]
    root_failures: tuple[jax.Array, ...]
    second_moments: tuple[jax.Array, ...]
    momentum: tuple[jax.Array, ...]


def _compute_dtype(dtype) -> jnp.dtype:
    """Statistics and roots are at least float32, even for bf16 parameters."""
    return jnp.promote_types(dtype, jnp.float32)


def _layouts(leaves, block_size, skip_dim_size_gt, exponent_override):
    shapes = tuple(tuple(leaf.shape) for leaf in leaves)
    layout = blocking.block_layout(shapes, block_size, skip_dim_size_gt)
    return layout, blocking.statistic_layout(layout, exponent_override)


def _packed_shapes(leaves, layout: blocking.BlockLayout) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Shapes and dtypes of the packed form of leaves cast to compute dtypes."""
    structs = [jax.ShapeDtypeStruct(leaf.shape, _compute_dtype(leaf.dtype)) for leaf in leaves]
    return jax.eval_shape(lambda xs: blocking.pack(xs, layout), structs)


def _group_dtypes(packed, statistics: blocking.StatisticLayout) -> list[jnp.dtype]:
    """Statistic dtypes: the widest dtype of the stacks that feed each group."""
    dtypes = [jnp.float32] * len(statistics.groups)
    # zip stops at the last stack: the flat vector, if any, feeds no group.
    for stack, slots in zip(packed, statistics.slots):
        for slot in slots:
            dtypes[slot.group] = jnp.promote_types(dtypes[slot.group], stack.dtype)
    return dtypes


def _kronecker_factors(blocks: jax.Array) -> list[jax.Array]:
    """Return G_(i) G_(i)^T for each dimension i of a stack ``[n, *block_shape]``.

    G_(i) is the block unfolded along dimension i, so the product contracts
    every other dimension; for a matrix this gives G G^T and G^T G.
    """
    rank = blocks.ndim - 1
    factors = []
    for i in range(1, rank + 1):
        others = tuple(axis for axis in range(1, rank + 1) if axis != i)
        factor = jax.lax.dot_general(
            blocks, blocks, ((others, others), ((0,), (0,))), precision=_HIGHEST
        )
        factors.append(factor)
    return factors


def _precondition(blocks: jax.Array, roots: list[jax.Array]) -> jax.Array:
    """Apply one root per dimension to a stack ``[n, *block_shape]``.

    Each contraction consumes the leading block dimension and appends the
    result as the last one, so after all k roots the dimensions are back in
    their original order. Roots are symmetric, so either side contracts.
    """
    for root in roots:
        blocks = jax.lax.dot_general(blocks, root, (((1,), (1,)), ((0,), (0,))), precision=_HIGHEST)
    return blocks


def _block_norms(blocks: jax.Array) -> jax.Array:
    axes = tuple(range(1, blocks.ndim))
    return jnp.sqrt(jnp.sum(jnp.square(blocks), axis=axes, keepdims=True))


def scale_by_shampoo(
    block_size: int = 256,
    beta1: float = 0.9,
    beta2: float = 0.999,
    diagonal_epsilon: float = 1e-8,
    matrix_epsilon: float = 1e-6,
    *,
    start_preconditioning_step: int = 10,
    preconditioning_compute_steps: int = 10,
    statistics_compute_steps: int = 1,
    graft_type: grafting.GraftType = "adam",
    nesterov: bool = False,
    exponent_override: int | None = None,
    skip_preconditioning_dim_size_gt: int = 4096,
    root_method: matrix_roots.RootMethod = "newton",
    max_root_iterations: int = 100,
    root_tolerance: float = 1e-6,
    root_error_threshold: float = 0.5,
    pseudo_inverse_rtol: float | None = None,
    root_dtype: Any = None,
) -> optax.GradientTransformation:
    """Precondition gradients with Shampoo, grafted onto a diagonal method.

    Args:
      block_size: largest statistic size. Larger dimensions are split into
        blocks; consecutive small dimensions are merged up to this size.
      beta1: momentum of the grafted update (0 disables it).
      beta2: decay of the statistics and of the grafting second moment; 1
        accumulates sums as in AdaGrad.
      diagonal_epsilon: added to sqrt(nu) in the grafting denominator.
      matrix_epsilon: damping of each statistic before its root, relative to
        its largest eigenvalue and never below ``matrix_epsilon`` itself.
      start_preconditioning_step: the first update that uses Shampoo's
        direction; earlier updates take the grafted diagonal step alone.
      preconditioning_compute_steps: roots are recomputed at
        ``start_preconditioning_step`` and every this many updates after it.
      statistics_compute_steps: statistics are updated every this many steps.
      graft_type: ``"adam"``, ``"rmsprop"``, ``"adagrad"``, ``"sgd"`` or
        ``"none"``; see ``shampoo_optax.grafting``.
      nesterov: use Nesterov momentum.
      exponent_override: root order p for every statistic; by default a block
        of rank k uses p = 2k.
      skip_preconditioning_dim_size_gt: parameters with any dimension larger
        than this get the grafted diagonal step only.
      root_method: ``"newton"`` (coupled Newton iterations) or ``"eigh"``
        (eigendecomposition); see ``shampoo_optax.matrix_roots`` for how they
        compare.
      max_root_iterations: cap on Newton iterations per root.
      root_tolerance: Newton stops once its error is at most this value.
      root_error_threshold: a root whose residual ``max |X^a A X^b - I|``
        (a + b = p) is above this value, or not finite, is rejected and the
        previous root kept. Accurate float32 roots stayed below 0.1 at
        condition number 1e6, while a scaled identity scores about 1.
      pseudo_inverse_rtol: if set, eigenvalues of a statistic at most this
        fraction of its largest one count as zero, and the root leaves their
        directions out (a pseudo-inverse). Needs ``root_method="eigh"``.
      root_dtype: dtype the roots are computed in, e.g. ``jnp.float64`` with
        ``jax_enable_x64`` on; the statistics' dtype by default. Roots are
        stored in the statistics' dtype.

    Returns:
      An ``optax.GradientTransformation`` whose state is a ``ShampooState``.
    """
    validation.check_int("block_size", block_size, 256, minimum=1, sets_shapes=True)
    validation.check_unit_interval("beta1", beta1, 0.9, include_one=False)
    validation.check_unit_interval("beta2", beta2, 0.999, include_one=True)
    validation.check_non_negative("diagonal_epsilon", diagonal_epsilon, 1e-8)
    validation.check_positive("matrix_epsilon", matrix_epsilon, 1e-6)
    validation.check_int("start_preconditioning_step", start_preconditioning_step, 10, minimum=1)
    validation.check_int("preconditioning_compute_steps", preconditioning_compute_steps, 10, minimum=1)
    validation.check_int("statistics_compute_steps", statistics_compute_steps, 1, minimum=1)
    validation.check_choice("graft_type", graft_type, grafting.GRAFT_TYPES)
    if nesterov and isinstance(beta1, numbers.Real) and beta1 == 0:
        raise ValueError("nesterov=True needs momentum, but beta1 is 0; use e.g. beta1=0.9, or nesterov=False")
    if exponent_override is not None:
        validation.check_int("exponent_override", exponent_override, 4, minimum=1, sets_shapes=True)
    validation.check_int(
        "skip_preconditioning_dim_size_gt", skip_preconditioning_dim_size_gt, 4096, minimum=0, sets_shapes=True
    )
    matrix_roots.check_options("root_method", root_method, pseudo_inverse_rtol)
    validation.check_int("max_root_iterations", max_root_iterations, 100, minimum=1)
    validation.check_positive("root_tolerance", root_tolerance, 1e-6)
    validation.check_positive("root_error_threshold", root_error_threshold, 0.5)
    if root_dtype is not None:
        root_dtype = validation.check_float_dtype("root_dtype", root_dtype)

    def layouts(leaves):
        return _layouts(leaves, block_size, skip_preconditioning_dim_size_gt, exponent_override)

    def init_fn(params):
        leaves = jax.tree.leaves(params)
        layout, statistics = layouts(leaves)
        packed = _packed_shapes(leaves, layout)
        dtypes = _group_dtypes(packed, statistics)

        zeros = tuple(jnp.zeros((n, d, d), dtype) for (d, _, n), dtype in zip(statistics.groups, dtypes))
        identities = tuple(
            jnp.broadcast_to(jnp.eye(d, dtype=dtype), (n, d, d))
            for (d, _, n), dtype in zip(statistics.groups, dtypes)
        )
        packed_zeros = tuple(jnp.zeros(x.shape, x.dtype) for x in packed)
        return ShampooState(
            count=jnp.zeros((), jnp.int32),
            statistics=zeros,
            preconditioners=identities,
            root_errors=tuple(jnp.zeros((n,), jnp.float32) for _, _, n in statistics.groups),
            root_iterations=tuple(jnp.zeros((n,), jnp.int32) for _, _, n in statistics.groups),
            root_failures=tuple(jnp.zeros((n,), jnp.int32) for _, _, n in statistics.groups),
            second_moments=grafting.init_second_moments(graft_type, packed_zeros),
            momentum=packed_zeros,
        )

    # NOTE: a non-finite gradient makes the statistics non-finite for good.
    # Later roots are then rejected, so the stored roots stay finite, but the
    # preconditioner stops adapting. Wrap the optimizer in
    # optax.apply_if_finite to skip such steps.
    def update_statistics(statistics, stacks, layout: blocking.StatisticLayout):
        terms: list[list[jax.Array]] = [[] for _ in layout.groups]
        for blocks, slots in zip(stacks, layout.slots):
            for factor, slot in zip(_kronecker_factors(blocks), slots):
                terms[slot.group].append(factor)
        # Factors were appended in slot order, so concatenation lines them up
        # with each slot's offset.
        coefficients = grafting.average_coefficients(beta2)
        return tuple(
            grafting.moving_average(old, jnp.concatenate(group_terms).astype(old.dtype), coefficients)
            for old, group_terms in zip(statistics, terms)
        )

    def refresh_roots(state: ShampooState, statistics, count, layout: blocking.StatisticLayout):
        # Bias correction as in Adam: an average started at zero underestimates
        # the statistics early on, which inflates the damping's share and,
        # without grafting, the step.
        num_updates = jnp.maximum(count // statistics_compute_steps, 1)
        correction = grafting.bias_correction(beta2, num_updates)
        roots, errors, iterations, failures = [], [], [], []
        for (_, p, _), stats, old_root, old_failures in zip(
            layout.groups, statistics, state.preconditioners, state.root_failures
        ):
            corrected = stats / correction.astype(stats.dtype)
            result = matrix_roots.matrix_inverse_pth_root(
                corrected if root_dtype is None else corrected.astype(root_dtype),
                p,
                epsilon=matrix_epsilon,
                method=root_method,
                max_iterations=max_root_iterations,
                tolerance=root_tolerance,
                pseudo_inverse_rtol=pseudo_inverse_rtol,
            )
            root = result.root.astype(old_root.dtype)
            accepted = jnp.all(jnp.isfinite(root), axis=(1, 2)) & (result.error <= root_error_threshold)
            roots.append(jnp.where(accepted[:, None, None], root, old_root))
            errors.append(result.error.astype(jnp.float32))
            iterations.append(result.iterations)
            failures.append(old_failures + (~accepted).astype(jnp.int32))
        return tuple(roots), tuple(errors), tuple(iterations), tuple(failures)

    def check_state_matches(state: ShampooState, updates) -> None:
        """Raise ``ValueError`` naming the leaf if ``state`` was built for another tree."""
        paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(updates)
        structs = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for _, leaf in paths_and_leaves]
        expected = jax.eval_shape(init_fn, structs)
        for field in ShampooState._fields:
            got = [x.shape for x in jax.tree.leaves(getattr(state, field))]
            want = [x.shape for x in jax.tree.leaves(getattr(expected, field))]
            if got == want:
                continue
            state_stacks = {m.shape[1:]: m.shape[0] for m in state.momentum if m.ndim >= 2}
            state_diagonal = sum(m.size for m in state.momentum if m.ndim == 1)
            misfit = blocking.describe_misfit(
                tuple(s.shape for s in structs),
                [jax.tree_util.keystr(path) or "<root>" for path, _ in paths_and_leaves],
                block_size,
                skip_preconditioning_dim_size_gt,
                state_stacks,
                state_diagonal,
            )
            raise ValueError(
                f"the updates do not match the Shampoo state: state.{field} has shapes {got}, and these "
                f"updates need {want}. First difference: {misfit}. Pass updates with the tree of the params "
                "given to init. For a restored checkpoint, also use the block_size, exponent_override and "
                "skip_preconditioning_dim_size_gt of the run that saved it."
            )

    def update_fn(updates, state: ShampooState, params=None):
        del params
        check_state_matches(state, updates)
        leaves, treedef = jax.tree.flatten(updates)
        layout, statistic_layout = layouts(leaves)
        count = optax.safe_increment(state.count)
        gradients = blocking.pack([leaf.astype(_compute_dtype(leaf.dtype)) for leaf in leaves], layout)
        stacks = gradients[: len(layout.stacks)]

        graft_steps, second_moments = grafting.grafting_step(
            graft_type, gradients, state.second_moments, count, beta2, diagonal_epsilon
        )

        statistics = jax.lax.cond(
            count % statistics_compute_steps == 0,
            lambda: update_statistics(state.statistics, stacks, statistic_layout),
            lambda: state.statistics,
        )

        refresh = (count >= start_preconditioning_step) & (
            (count - start_preconditioning_step) % preconditioning_compute_steps == 0
        )
        preconditioners, root_errors, root_iterations, root_failures = jax.lax.cond(
            refresh,
            lambda: refresh_roots(state, statistics, count, statistic_layout),
            lambda: (state.preconditioners, state.root_errors, state.root_iterations, state.root_failures),
        )

        use_shampoo = count >= start_preconditioning_step
        steps = []
        for blocks, graft_blocks, slots in zip(stacks, graft_steps, statistic_layout.slots):
            roots = [
                preconditioners[slot.group][slot.offset : slot.offset + blocks.shape[0]] for slot in slots
            ]
            direction = _precondition(blocks, roots)
            if graft_type != "none":
                # Each block keeps Shampoo's direction and takes the grafted
                # step's norm. A zero direction gives a zero step, not 0/0.
                norm = _block_norms(direction)
                safe_norm = jnp.where(norm > 0, norm, 1.0)
                direction = jnp.where(norm > 0, direction * (_block_norms(graft_blocks) / safe_norm), 0.0)
            steps.append(jnp.where(use_shampoo, direction, graft_blocks))
        # Leaves that are not preconditioned take the grafted step.
        steps.extend(graft_steps[len(stacks) :])

        momentum_coefficients = grafting.average_coefficients(beta1)
        momentum = tuple(grafting.moving_average(m, s, momentum_coefficients) for m, s in zip(state.momentum, steps))
        # Bias-corrected as in Adam; with Nesterov, as in NAdam (Dozat, 2016).
        if nesterov:
            momentum_scale = beta1 / grafting.bias_correction(beta1, count + 1)
            step_scale = (1 - beta1) / grafting.bias_correction(beta1, count)
            outputs = [momentum_scale * m + step_scale * s for m, s in zip(momentum, steps)]
        else:
            momentum_scale = 1 / grafting.bias_correction(beta1, count)
            outputs = [momentum_scale * m for m in momentum]

        new_updates = blocking.unpack(outputs, leaves, layout)
        new_state = ShampooState(
            count=count,
            statistics=statistics,
            preconditioners=preconditioners,
            root_errors=root_errors,
            root_iterations=root_iterations,
            root_failures=root_failures,
            second_moments=second_moments,
            momentum=momentum,
        )
        return jax.tree.unflatten(treedef, new_updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def shampoo(
    learning_rate: optax.ScalarOrSchedule,
    block_size: int = 256,
    beta1: float = 0.9,
    beta2: float = 0.999,
    diagonal_epsilon: float = 1e-8,
    matrix_epsilon: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    weight_decay_mask: Any = None,
    start_preconditioning_step: int = 10,
    preconditioning_compute_steps: int = 10,
    statistics_compute_steps: int = 1,
    graft_type: grafting.GraftType = "adam",
    nesterov: bool = False,
    exponent_override: int | None = None,
    skip_preconditioning_dim_size_gt: int = 4096,
    root_method: matrix_roots.RootMethod = "newton",
    max_root_iterations: int = 100,
    root_tolerance: float = 1e-6,
    root_error_threshold: float = 0.5,
    pseudo_inverse_rtol: float | None = None,
    root_dtype: Any = None,
) -> optax.GradientTransformation:
    """Shampoo with decoupled weight decay and a learning rate or schedule.

    The chain is ``scale_by_shampoo``, then ``optax.add_decayed_weights`` (as
    in AdamW, the decay is not preconditioned), then
    ``optax.scale_by_learning_rate``. The arguments not listed below are
    those of ``scale_by_shampoo``. They are spelled out, rather than
    forwarded as ``**kwargs``, so that ``optax.inject_hyperparams`` can see
    them. With ``inject_hyperparams``, list ``block_size`` and
    ``skip_preconditioning_dim_size_gt`` (and ``exponent_override`` if set)
    in ``static_args``: they set array shapes, so they cannot be arrays.

    Args:
      learning_rate: a float or an optax schedule.
      weight_decay: decoupled weight decay rate, multiplied by the learning
        rate as in ``optax.adamw``.
      weight_decay_mask: a tree of bools, or a function of the params that
        returns one, choosing the leaves that decay; all leaves by default.

    Returns:
      An ``optax.GradientTransformation``.
    """
    validation.check_non_negative("weight_decay", weight_decay, 1e-4)
    if not callable(learning_rate):
        validation.check_non_negative("learning_rate", learning_rate, 1e-3)
    return optax.chain(
        scale_by_shampoo(
            block_size,
            beta1,
            beta2,
            diagonal_epsilon,
            matrix_epsilon,
            start_preconditioning_step=start_preconditioning_step,
            preconditioning_compute_steps=preconditioning_compute_steps,
            statistics_compute_steps=statistics_compute_steps,
            graft_type=graft_type,
            nesterov=nesterov,
            exponent_override=exponent_override,
            skip_preconditioning_dim_size_gt=skip_preconditioning_dim_size_gt,
            root_method=root_method,
            max_root_iterations=max_root_iterations,
            root_tolerance=root_tolerance,
            root_error_threshold=root_error_threshold,
            pseudo_inverse_rtol=pseudo_inverse_rtol,
            root_dtype=root_dtype,
        ),
        optax.add_decayed_weights(weight_decay, weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )
