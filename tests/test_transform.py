"""Tests of scale_by_shampoo and shampoo against a NumPy reference and in training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import shampoo_optax
from numpy_reference import NumpyShampoo, inverse_pth_root

# Shapes that exercise blocking with remainders, merging and skipped leaves.
SHAPES = [(20, 12), (7, 9, 4), (3, 3, 2, 5), (16,), (), (1, 6), (40, 3)]


def random_gradients(seed, shapes, steps):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=shape).astype(np.float32) for shape in shapes] for _ in range(steps)]


CASES = {
    "adam_graft": dict(graft_type="adam", beta1=0.9, beta2=0.99),
    "adagrad_sums": dict(graft_type="adagrad", beta1=0.0, beta2=1.0),
    "rmsprop_nesterov": dict(graft_type="rmsprop", beta1=0.5, beta2=0.9, nesterov=True),
    "sgd_exponent_2": dict(graft_type="sgd", beta1=0.9, beta2=0.95, exponent_override=2),
    "no_graft": dict(graft_type="none", beta1=0.0, beta2=0.999),
}


@pytest.mark.parametrize("root_method, tolerance", [("eigh", 2e-4), ("newton", 2e-3)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy_reference(case, root_method, tolerance):
    options = dict(
        block_size=8,
        diagonal_epsilon=1e-8,
        matrix_epsilon=1e-4,
        start_preconditioning_step=3,
        preconditioning_compute_steps=2,
        **CASES[case],
    )
    reference = NumpyShampoo(**options)
    transform = shampoo_optax.scale_by_shampoo(**options, root_method=root_method)
    params = [jnp.zeros(shape, jnp.float32) for shape in SHAPES]
    reference.init([np.asarray(p) for p in params])
    state = transform.init(params)
    update = jax.jit(transform.update)

    for step, grads in enumerate(random_gradients(0, SHAPES, steps=8), start=1):
        updates, state = update([jnp.asarray(g) for g in grads], state)
        expected = reference.update(grads)
        for leaf, (got, want) in enumerate(zip(updates, expected)):
            scale = max(np.abs(want).max(), 1e-12)
            error = np.abs(np.asarray(got, np.float64) - want).max() / scale
            assert error < tolerance, f"step {step}, leaf {SHAPES[leaf]}: relative error {error:.2e}"


def test_compiles_once_across_refreshes():
    traces = 0
    transform = shampoo_optax.shampoo(1e-2, block_size=16, start_preconditioning_step=2, preconditioning_compute_steps=3)
    params = {"w": jnp.ones((24, 10)), "b": jnp.zeros((10,))}

    @jax.jit
    def step(params, state, key):
        nonlocal traces
        traces += 1
        grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = transform.init(params)
    for i in range(12):
        params, state = step(params, state, jax.random.key(i))
    assert traces == 1
    assert int(state[0].count) == 12


def test_jit_and_eager_agree():
    transform = shampoo_optax.scale_by_shampoo(block_size=8, start_preconditioning_step=2, preconditioning_compute_steps=2)
    shapes = [(12, 10), (5,)]
    params = [jnp.zeros(shape) for shape in shapes]
    jit_state = eager_state = transform.init(params)
    for grads in random_gradients(1, shapes, steps=5):
        grads = [jnp.asarray(g) for g in grads]
        jit_updates, jit_state = jax.jit(transform.update)(grads, jit_state)
        eager_updates, eager_state = transform.update(grads, eager_state)
        # The (8, 2) remainder blocks have rank-2 statistics, damped to a
        # condition number near 1e6: their float32 roots are accurate to about
        # 1e-4, and XLA's fusion under jit changes the rounding at that level.
        for a, b in zip(jit_updates, eager_updates):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_state_is_arrays_only():
    transform = shampoo_optax.shampoo(1e-3, block_size=8)
    state = transform.init({"w": jnp.zeros((10, 20)), "b": jnp.zeros((20,))})
    leaves = jax.tree.leaves(state)
    assert leaves
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)


def test_zero_gradients_give_zero_updates():
    transform = shampoo_optax.shampoo(1e-2, block_size=8, start_preconditioning_step=1, preconditioning_compute_steps=1)
    params = {"w": jnp.ones((10, 6)), "b": jnp.ones((6,))}
    state = transform.init(params)
    for _ in range(3):
        updates, state = transform.update(jax.tree.map(jnp.zeros_like, params), state, params)
        for leaf in jax.tree.leaves(updates):
            assert np.all(np.asarray(leaf) == 0.0)


def test_update_keeps_parameter_dtype():
    transform = shampoo_optax.shampoo(1e-2, block_size=8, start_preconditioning_step=1)
    params = {"w": jnp.ones((10, 6), jnp.bfloat16), "b": jnp.ones((6,), jnp.float32)}
    state = transform.init(params)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.1, p.dtype), params)
    updates, state = transform.update(grads, state, params)
    assert updates["w"].dtype == jnp.bfloat16
    assert updates["b"].dtype == jnp.float32
    assert all(s.dtype == jnp.float32 for s in state[0].statistics)


def test_weight_decay_is_decoupled():
    transform = shampoo_optax.shampoo(0.1, weight_decay=0.5, weight_decay_mask={"w": True, "b": False})
    params = {"w": jnp.ones((4, 4)), "b": jnp.ones((4,))}
    state = transform.init(params)
    updates, _ = transform.update(jax.tree.map(jnp.zeros_like, params), state, params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones((4, 4)))
    np.testing.assert_array_equal(updates["b"], np.zeros(4))


def test_learning_rate_schedule():
    schedule = optax.linear_schedule(1.0, 0.0, transition_steps=4)
    transform = shampoo_optax.shampoo(schedule, graft_type="sgd", beta1=0.0)
    params = {"b": jnp.zeros((3,))}
    state = transform.init(params)
    grads = {"b": jnp.ones((3,))}
    magnitudes = []
    for _ in range(4):
        updates, state = transform.update(grads, state, params)
        magnitudes.append(float(updates["b"][0]))
    np.testing.assert_allclose(magnitudes, [-1.0, -0.75, -0.5, -0.25])


@pytest.mark.parametrize(
    "argument, value, message",
    [
        ("block_size", 0, "block_size must be a positive int, got 0"),
        ("block_size", 12.5, "block_size must be a positive int"),
        ("beta1", 1.0, r"beta1 must be in \[0, 1\), got 1.0"),
        ("beta2", 1.5, r"beta2 must be in \[0, 1\], got 1.5"),
        ("matrix_epsilon", 0.0, "matrix_epsilon must be > 0"),
        ("diagonal_epsilon", -1.0, "diagonal_epsilon must be >= 0"),
        ("preconditioning_compute_steps", 0, "preconditioning_compute_steps must be a positive int"),
        ("statistics_compute_steps", -2, "statistics_compute_steps must be a positive int"),
        ("start_preconditioning_step", 0, "start_preconditioning_step must be a positive int"),
        ("graft_type", "adamw", "graft_type must be one of 'none', 'sgd', 'adagrad', 'rmsprop', 'adam'"),
        ("root_method", "svd", "root_method must be one of 'newton', 'eigh'"),
        ("pseudo_inverse_rtol", 1e-6, "needs eigenvalues, .* use root_method='eigh'"),
        ("root_dtype", "int32", "root_dtype must be a floating dtype, got 'int32'"),
        ("root_dtype", "bogus", "root_dtype must be a floating dtype, got 'bogus'"),
        ("root_dtype", "float64", r"root_dtype=float64 needs 64-bit JAX; call jax.config.update"),
        ("exponent_override", 0, "exponent_override must be a positive int"),
        ("skip_preconditioning_dim_size_gt", -1, "skip_preconditioning_dim_size_gt must be an int >= 0"),
        ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ],
)
def test_invalid_hyperparameter_raises(argument, value, message):
    with pytest.raises(ValueError, match=message):
        shampoo_optax.shampoo(1e-3, **{argument: value})


def test_non_finite_gradient_keeps_previous_roots():
    transform = shampoo_optax.scale_by_shampoo(block_size=8, start_preconditioning_step=1, preconditioning_compute_steps=1)
    params = {"w": jnp.zeros((8, 6))}
    state = transform.init(params)
    update = jax.jit(transform.update)
    _, state = update({"w": jnp.asarray(random_gradients(0, [(8, 6)], 1)[0][0])}, state)
    good_roots = [np.asarray(root) for root in state.preconditioners]
    assert all(int(f.sum()) == 0 for f in state.root_failures)

    for bad in (np.inf, np.nan):
        failures = sum(int(f.sum()) for f in state.root_failures)
        grads = np.ones((8, 6), np.float32)
        grads[2, 3] = bad
        _, state = update({"w": jnp.asarray(grads)}, state)
        for root, good in zip(state.preconditioners, good_roots):
            np.testing.assert_array_equal(root, good)
        # Both statistics of the one block were rejected.
        assert sum(int(f.sum()) for f in state.root_failures) == failures + 2


def _dot_lines(lowered_text: str) -> list[str]:
    return [line for line in lowered_text.splitlines() if "dot_general" in line]


@pytest.mark.parametrize("root_method", ["newton", "eigh"])
def test_every_matmul_asks_for_highest_precision(root_method):
    # On CPU every precision computes the same numbers, so only the lowered
    # program can show a missing flag; on TPU it would mean bf16 passes.
    transform = shampoo_optax.shampoo(1e-3, block_size=8, root_method=root_method)
    params = {"w": jnp.zeros((12, 8)), "conv": jnp.zeros((3, 3, 4, 8)), "b": jnp.zeros((8,))}
    state = transform.init(params)
    text = jax.jit(transform.update).lower(params, state, params).as_text()
    lines = _dot_lines(text)
    assert len(lines) > 10
    for line in lines:
        assert "precision = [HIGHEST, HIGHEST]" in line, line


def test_float64_roots_with_x64():
    # A rank-2 statistic damped to condition number 1e6: float32 roots keep
    # about two digits, float64 roots all that float32 storage holds. Newton
    # would estimate lambda_max, and so the damping, to a few percent only.
    gradient = np.zeros((8, 8), np.float32)
    gradient[:2] = random_gradients(2, [(2, 8)], 1)[0][0]
    with jax.enable_x64(True):
        transform = shampoo_optax.scale_by_shampoo(
            block_size=8, beta2=1.0, start_preconditioning_step=1, root_method="eigh", root_dtype=jnp.float64
        )
        state = transform.init({"w": jnp.zeros((8, 8), jnp.float32)})
        _, state = jax.jit(transform.update)({"w": jnp.asarray(gradient)}, state)
    (statistics,), (roots,) = state.statistics, state.preconditioners
    assert statistics.dtype == roots.dtype == jnp.float32
    for statistic, root in zip(np.asarray(statistics, np.float64), np.asarray(roots, np.float64)):
        expected = inverse_pth_root(statistic, 4, 1e-6)
        assert np.linalg.norm(root - expected) / np.linalg.norm(expected) < 1e-6


def test_pseudo_inverse_whitens_rank_one_gradient():
    # G = s u v^T has statistics s^2 u u^T and s^2 v v^T, whose pseudo-inverse
    # fourth roots are u u^T / sqrt(s) and v v^T / sqrt(s): the direction is u v^T.
    rng = np.random.default_rng(5)
    u, v = rng.normal(size=12), rng.normal(size=10)
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    transform = shampoo_optax.scale_by_shampoo(
        block_size=16,
        beta1=0.0,
        graft_type="none",
        start_preconditioning_step=1,
        root_method="eigh",
        pseudo_inverse_rtol=1e-6,
    )
    state = transform.init({"w": jnp.zeros((12, 10))})
    updates, _ = transform.update({"w": jnp.asarray(3.0 * np.outer(u, v), jnp.float32)}, state)
    np.testing.assert_allclose(updates["w"], np.outer(u, v), atol=1e-5)


def test_negative_learning_rate_raises():
    with pytest.raises(ValueError, match="learning_rate must be >= 0, got -0.1"):
        shampoo_optax.shampoo(-0.1)


def _least_squares_problem(condition_number=1e4, n=512, d_in=32, d_out=8, seed=0):
    """Return (features, targets) whose features have a rotated, ill-conditioned covariance."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(d_in, d_in)))
    scales = np.logspace(0, -np.log10(condition_number) / 2, d_in)
    features = rng.normal(size=(n, d_in)) * scales @ rotation.T
    solution = rng.normal(size=(d_in, d_out))
    return jnp.asarray(features, jnp.float32), jnp.asarray(features @ solution, jnp.float32)


def _final_loss(optimizer, features, targets, steps):
    def loss_fn(w):
        return jnp.mean(jnp.square(features @ w - targets))

    @jax.jit
    def run(w):
        def body(carry, _):
            w, state = carry
            grads = jax.grad(loss_fn)(w)
            updates, state = optimizer.update(grads, state, w)
            return (optax.apply_updates(w, updates), state), None

        (w, _), _ = jax.lax.scan(body, (w, optimizer.init(w)), None, length=steps)
        return loss_fn(w)

    return float(run(jnp.zeros((features.shape[1], targets.shape[1]))))


def test_beats_adamw_on_ill_conditioned_least_squares():
    features, targets = _least_squares_problem()
    steps = 300
    # Both optimizers decay their rate to zero: at a constant rate of 0.3 or
    # more, Shampoo's final loss depended on rounding (1.4e-6 on JAX 0.12,
    # 1.8e-4 on JAX 0.10). With the decay, AdamW's best rate is 1.0, inside
    # the sweep.
    rates = [1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0]

    def schedule(rate):
        return optax.cosine_decay_schedule(rate, steps)

    adamw = min(_final_loss(optax.adamw(schedule(lr), weight_decay=0.0), features, targets, steps) for lr in rates)
    shampoo = min(
        _final_loss(
            shampoo_optax.shampoo(schedule(lr), start_preconditioning_step=1, preconditioning_compute_steps=1),
            features,
            targets,
            steps,
        )
        for lr in rates
    )
    assert np.isfinite(shampoo)
    assert shampoo < 0.1 * adamw, f"Shampoo {shampoo:.3e} vs AdamW {adamw:.3e}"


def test_rank_3_block_matches_dense_kronecker_formula():
    rng = np.random.default_rng(5)
    shape = (3, 4, 5)
    grads = rng.normal(size=(6,) + shape).astype(np.float32)
    # One block, so the direction is (L1 kron L2 kron L3)^(-1/6) vec(G)
    # with the statistics summed over all six gradients (beta2 = 1).
    transform = shampoo_optax.scale_by_shampoo(
        block_size=5,
        beta1=0.0,
        beta2=1.0,
        graft_type="none",
        matrix_epsilon=1e-9,
        start_preconditioning_step=6,
        root_method="eigh",
    )
    state = transform.init([jnp.zeros(shape)])
    for g in grads:
        updates, state = transform.update([jnp.asarray(g)], state)

    g64 = grads.astype(np.float64)
    factors = [
        np.einsum("nabc,nxbc->ax", g64, g64),
        np.einsum("nabc,naxc->bx", g64, g64),
        np.einsum("nabc,nabx->cx", g64, g64),
    ]
    roots = [inverse_pth_root(factor, 6, 1e-9) for factor in factors]
    dense = np.kron(np.kron(roots[0], roots[1]), roots[2])
    expected = (dense @ g64[-1].reshape(-1)).reshape(shape)
    np.testing.assert_allclose(updates[0], expected, rtol=2e-4, atol=1e-6)
