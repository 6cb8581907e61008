"""A tiny training run recorded with git-keepsake: fits y = 3x + 1 by gradient descent, no numpy.

Run it from anywhere inside a project; it records into the default repository (.keepsake/).
"""

import json
import random

import git_keepsake as keepsake


def train(learning_rate: float = 0.05, num_epochs: int = 8, seed: int = 0) -> None:
    rng = random.Random(seed)
    data = [(x, 3 * x + 1 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(200))]
    w, b = 0.0, 0.0
    experiment = keepsake.init(
        path="examples",
        params={"learning_rate": learning_rate, "num_epochs": num_epochs, "seed": seed},
    )
    for epoch in range(num_epochs):
        grad_w = sum(2 * (w * x + b - y) * x for x, y in data) / len(data)
        grad_b = sum(2 * (w * x + b - y) for x, y in data) / len(data)
        w, b = w - learning_rate * 10 * grad_w, b - learning_rate * 10 * grad_b
        loss = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
        with open(keepsake.Project().directory / "model.json", "w") as f:
            json.dump({"w": w, "b": b}, f)
        experiment.checkpoint(
            path="model.json",
            step=epoch,
            metrics={"loss": loss, "w": w, "b": b},
            primary_metric=("loss", "minimize"),
        )
    experiment.stop()

    best = experiment.best()
    print(f"\nRecorded experiment {experiment.short_id()} in {experiment.config['repository']}")
    print(f"  params: {experiment.params}")
    print(
        f"  {len(experiment.checkpoints)} checkpoints; best: {best.short_id()} at step {best.step}"
    )
    weights = best.open("model.json").read().decode()
    print(f"  best loss {best.metrics['loss']:.4f}, weights: {weights}")


if __name__ == "__main__":
    train()
