"""A plain NumPy Shampoo in float64, written for clarity rather than speed.

It walks every parameter and every block with Python loops and computes roots
with a float64 eigendecomposition, so it shares no code with the library: the
tests compare the two step by step.
"""

import itertools
import math

import numpy as np


def merged_shape(shape, block_size):
    dims, product = [], 1
    for size in shape:
        if size == 1:
            continue
        if product * size > block_size:
            if product > 1:
                dims.append(product)
            product = size
        else:
            product *= size
    if product > 1:
        dims.append(product)
    return tuple(dims)


def block_slices(shape, block_size):
    """Yield one tuple of slices per block of an array of this shape."""
    ranges = [range(0, size, block_size) for size in shape]
    for starts in itertools.product(*ranges):
        yield tuple(slice(start, min(start + block_size, size)) for start, size in zip(starts, shape))


def inverse_pth_root(matrix, p, epsilon):
    """Return (A + epsilon * max(lambda_max, 1) I)^(-1/p) in float64."""
    matrix = np.asarray(matrix, np.float64)
    matrix = (matrix + matrix.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    damping = epsilon * max(eigenvalues[-1], 1.0)
    return (eigenvectors * (eigenvalues + damping) ** (-1.0 / p)) @ eigenvectors.T


def factor(block, axis):
    others = [i for i in range(block.ndim) if i != axis]
    return np.tensordot(block, block, axes=(others, others))


def apply_root(block, root, axis):
    moved = np.tensordot(root, block, axes=([1], [axis]))
    return np.moveaxis(moved, 0, axis)


class NumpyShampoo:
    def __init__(
        self,
        *,
        block_size,
        beta1,
        beta2,
        diagonal_epsilon,
        matrix_epsilon,
        start_preconditioning_step,
        preconditioning_compute_steps,
        graft_type,
        nesterov=False,
        exponent_override=None,
        skip_preconditioning_dim_size_gt=4096,
    ):
        self.block_size = block_size
        self.beta1 = beta1
        self.beta2 = beta2
        self.diagonal_epsilon = diagonal_epsilon
        self.matrix_epsilon = matrix_epsilon
        self.start = start_preconditioning_step
        self.every = preconditioning_compute_steps
        self.graft_type = graft_type
        self.nesterov = nesterov
        self.exponent_override = exponent_override
        self.skip_gt = skip_preconditioning_dim_size_gt

    def _preconditioned(self, shape):
        if len(shape) < 2 or math.prod(shape) == 0 or max(shape) > self.skip_gt:
            return False
        return len(merged_shape(shape, self.block_size)) > 0

    def init(self, params):
        self.count = 0
        self.shapes = [p.shape for p in params]
        self.momentum = [np.zeros(p.shape) for p in params]
        self.nu = [np.zeros(p.shape) for p in params]
        self.blocks = []
        for shape in self.shapes:
            per_block = []
            if self._preconditioned(shape):
                merged = merged_shape(shape, self.block_size)
                for index in block_slices(merged, self.block_size):
                    block_shape = [s.stop - s.start for s in index]
                    per_block.append(
                        {
                            "index": index,
                            "statistics": [np.zeros((d, d)) for d in block_shape],
                            "roots": [np.eye(d) for d in block_shape],
                        }
                    )
            self.blocks.append(per_block)

    def _accumulate(self, average, term):
        if self.beta2 == 1:
            return average + term
        return self.beta2 * average + (1 - self.beta2) * term

    def _graft(self, i, g):
        if self.graft_type in ("sgd", "none"):
            return g
        if self.graft_type == "adagrad":
            self.nu[i] = self.nu[i] + g * g
        else:
            self.nu[i] = self._accumulate(self.nu[i], g * g)
        nu = self.nu[i]
        if self.graft_type == "adam" and self.beta2 != 1:
            nu = nu / (1 - self.beta2**self.count)
        return g / (np.sqrt(nu) + self.diagonal_epsilon)

    def update(self, grads):
        self.count += 1
        t = self.count
        refresh = t >= self.start and (t - self.start) % self.every == 0
        correction = 1.0 if self.beta2 == 1 else 1 - self.beta2**t
        updates = []
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            graft = self._graft(i, g)
            step = graft
            if self.blocks[i]:
                merged = merged_shape(g.shape, self.block_size)
                g_merged, graft_merged = g.reshape(merged), graft.reshape(merged)
                out = np.zeros(merged)
                for block in self.blocks[i]:
                    gb = g_merged[block["index"]]
                    p = self.exponent_override or 2 * gb.ndim
                    for axis in range(gb.ndim):
                        block["statistics"][axis] = self._accumulate(block["statistics"][axis], factor(gb, axis))
                        if refresh:
                            block["roots"][axis] = inverse_pth_root(
                                block["statistics"][axis] / correction, p, self.matrix_epsilon
                            )
                    direction = gb
                    for axis in range(gb.ndim):
                        direction = apply_root(direction, block["roots"][axis], axis)
                    if self.graft_type != "none":
                        norm = np.linalg.norm(direction)
                        graft_norm = np.linalg.norm(graft_merged[block["index"]])
                        direction = direction * (graft_norm / norm) if norm > 0 else 0 * direction
                    out[block["index"]] = direction
                if t >= self.start:
                    step = out.reshape(g.shape)

            self.momentum[i] = self.beta1 * self.momentum[i] + (1 - self.beta1) * step
            if self.nesterov:
                update = self.beta1 * self.momentum[i] / (1 - self.beta1 ** (t + 1)) + (1 - self.beta1) * step / (
                    1 - self.beta1**t
                )
            else:
                update = self.momentum[i] / (1 - self.beta1**t)
            updates.append(update)
        return updates
