"""Tiny PyTorch models for the tests, imported by recipes through their factory path."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 5, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.head(self.features(x))


def small_cnn(classes: int = 5, width: int = 8) -> nn.Module:
    return SmallCNN(classes, width)


class TwoHeads(nn.Module):
    """Two inputs (an image and a feature vector), two outputs (logits and an embedding)."""

    def __init__(self):
        super().__init__()
        self.cnn = SmallCNN(classes=6)
        self.mix = nn.Linear(6 + 4, 3)

    def forward(self, image, extra):
        embedding = self.cnn(image)
        return self.mix(torch.cat([embedding, extra], dim=1)), embedding


def two_heads() -> nn.Module:
    return TwoHeads()


@torch.library.custom_op("mdbuild_tests::scramble", mutates_args=())
def scramble(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1) * 2


@scramble.register_fake
def _(x):
    return torch.empty_like(x)


class Unexportable(nn.Module):
    def forward(self, x):
        return scramble(x)


def unexportable() -> nn.Module:
    return Unexportable()


def top2(outputs, labels) -> float:
    """A pluggable evaluation metric: top-2 accuracy in percent."""
    import numpy as np

    best_two = np.argsort(outputs, axis=-1)[:, -2:]
    return float(np.mean([label in row for row, label in zip(best_two, labels)]) * 100.0)


def exits() -> nn.Module:
    """A factory that ends the process, as some converters do on unsupported input."""
    raise SystemExit(3)


def overflowing():
    """An MLP whose hidden activations (about 1e5) overflow float16 (largest 65504)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight.mul_(1e5)
        model[2].weight.mul_(1e-5)
    return model


class TinyEncoder(nn.Module):
    """BERT-like: token and position embeddings, a TransformerEncoder layer with a padding mask."""

    def __init__(self, vocab: int = 100, width: int = 16, max_len: int = 64):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(max_len, width)
        layer = nn.TransformerEncoderLayer(width, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        hidden = self.tokens(input_ids) + self.positions(positions)
        return self.encoder(hidden, src_key_padding_mask=attention_mask == 0)


def tiny_encoder():
    torch.manual_seed(0)
    return TinyEncoder().eval()


class Fixed(nn.Module):
    """A linear layer whose weights are zero: its output is its bias whatever the input."""

    def __init__(self, bias: float):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.fill_(bias)

    def forward(self, x):
        return self.linear(x)


def fixed(bias: float = 0.0) -> nn.Module:
    return Fixed(bias)


class Undefined(nn.Module):
    def forward(self, x):
        return torch.log(x - x - 1)  # NaN everywhere


def undefined() -> nn.Module:
    return Undefined()


class Saturating(nn.Module):
    """A hidden tensor overflows to +-inf for most inputs; the sigmoid after it keeps the output finite."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return torch.sigmoid(self.linear(x) * 1e38 * 1e3)


def saturating() -> nn.Module:
    torch.manual_seed(0)
    return Saturating()


class Outlier(nn.Module):
    """One activation channel a thousand times the others, the next layer's weights scaled down to match
    (the outlier features of large transformers): per-tensor int8 of that activation rounds the other
    channels away; the layers after it quantize well."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(16, 32), nn.Linear(32, 32)
        self.rest = nn.Sequential(*(layer for _ in range(3) for layer in (nn.Linear(32, 32), nn.ReLU())), nn.Linear(32, 4))
        gain = torch.ones(32)
        gain[0] = 1000.0
        self.register_buffer("gain", gain)
        with torch.no_grad():
            self.second.weight[:, 0] /= 1000.0

    def forward(self, x):
        return self.rest(torch.relu(self.second(torch.relu(self.first(x)) * self.gain)))


def outlier() -> nn.Module:
    torch.manual_seed(0)
    return Outlier()


class Cancelling(nn.Module):
    """The difference of two nearly equal layers, scaled up: int8's rounding of either is larger than the
    difference, so only float passes."""

    def __init__(self):
        super().__init__()
        self.one, self.two = nn.Linear(8, 4), nn.Linear(8, 4)
        with torch.no_grad():
            self.two.weight.copy_(self.one.weight + 1e-3 * torch.randn_like(self.one.weight))
            self.two.bias.copy_(self.one.bias)

    def forward(self, x):
        return (self.one(x) - self.two(x)) * 100.0


def cancelling() -> nn.Module:
    torch.manual_seed(0)
    return Cancelling()
