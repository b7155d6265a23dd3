"""A small CNN trained in seconds on scikit-learn's bundled digits, with three disjoint splits:
training, calibration and held-out evaluation. `python -m builder.examples.digits [--save PATH]`
trains and prints held-out accuracy; the `digits` recipe builds `build_cnn` with the shipped weights
(digits_cnn.pt: float kernels differ between CPUs, so every machine loads the same weights)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from builder.errors import missing_extra

SEED = 0
EPOCHS = 12
WEIGHTS = "digits_cnn.pt"  # beside this module; the recipe names it pkg://builder.examples/digits_cnn.pt
# Fractions of the 1,797 images: the rest (30%) is held out for evaluation.
TRAIN, CALIBRATION = 0.6, 0.1


def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train" | "calibration" | "evaluation": (images (N, 1, 8, 8) in [0, 1], labels (N,))}."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise missing_extra("scikit-learn", "examples", "model.factory") from exc
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return {name: (images[index], digits.target[index].astype(np.int64))
            for name, index in split_indices(len(images)).items()}


def split_indices(count: int) -> dict[str, np.ndarray]:
    """Disjoint index sets covering every image once, in a seeded random order."""
    order = np.random.default_rng(SEED).permutation(count)
    train_end = int(TRAIN * count)
    calibration_end = train_end + int(CALIBRATION * count)
    return {"train": order[:train_end], "calibration": order[train_end:calibration_end],
            "evaluation": order[calibration_end:]}


def build_cnn():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def train_cnn():
    """The network trained from scratch (eval mode): the same weights on the same CPU and libraries."""
    import torch

    images, labels = splits()["train"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same floating-point reduction order every run
    try:
        torch.manual_seed(SEED)
        model = build_cnn()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        generator = torch.Generator().manual_seed(SEED)
        for _ in range(EPOCHS):
            for batch in torch.randperm(len(x), generator=generator).split(64):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def trained_cnn():
    """The network with the shipped weights (eval mode): what the recipe builds, as one factory."""
    import torch

    model = build_cnn()
    model.load_state_dict(torch.load(Path(__file__).with_name(WEIGHTS), map_location="cpu", weights_only=True))
    return model.eval()


def calibration_set() -> np.ndarray:
    return splits()["calibration"][0]


def evaluation_set() -> tuple[np.ndarray, np.ndarray]:
    return splits()["evaluation"]


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", help="write the trained state_dict here")
    args = parser.parse_args()
    model, shipped = train_cnn(), trained_cnn()
    images, labels = evaluation_set()
    with torch.no_grad():
        accuracy, shipped_accuracy = ((m(torch.from_numpy(images)).argmax(1).numpy() == labels).mean() * 100
                                      for m in (model, shipped))
    sizes = {name: len(part[1]) for name, part in splits().items()}
    print(f"splits {sizes}; held-out top-1 accuracy {accuracy:.2f}%")
    same = all(torch.equal(value, shipped.state_dict()[key]) for key, value in model.state_dict().items())
    print(f"shipped weights ({WEIGHTS}): held-out top-1 accuracy {shipped_accuracy:.2f}%, "
          f"{'identical to' if same else 'not bit-identical to'} the weights trained here")
    if args.save:
        torch.save(model.state_dict(), args.save)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
