"""Model factories for benchmarks/breadth.py: common architectures with seeded random weights, small
configurations of the transformers ones (no download). Each returns a module whose forward takes the
recipe's inputs in order and returns its one output."""

from __future__ import annotations

import torch


class _Hidden(torch.nn.Module):
    """A transformers model called with keyword inputs, returning its last hidden state."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).last_hidden_state


def _small(config_class, **fields):
    defaults = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
    return config_class(**{**defaults, **fields})


def torchvision_model(name: str, **kwargs):
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, **kwargs).eval()


class _Segmentation(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def deeplabv3():
    import torchvision

    torch.manual_seed(0)
    return _Segmentation(torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=False)).eval()


def text(kind: str):
    import transformers as t

    torch.manual_seed(0)
    names = ["input_ids", "attention_mask"]
    if kind == "bert":
        model = t.BertModel(_small(t.BertConfig, vocab_size=1000))
    elif kind == "distilbert":
        model = t.DistilBertModel(t.DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128))
    elif kind == "roberta":
        model = t.RobertaModel(_small(t.RobertaConfig, vocab_size=1000))
    elif kind == "gpt2":
        model = t.GPT2Model(t.GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=128))
    elif kind == "t5":
        model = t.T5EncoderModel(t.T5Config(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4))
    else:
        raise ValueError(kind)
    return _Hidden(model, names).eval()


def vit():
    import transformers as t

    torch.manual_seed(0)
    return _Hidden(t.ViTModel(_small(t.ViTConfig, image_size=32, patch_size=8)), ["pixel_values"]).eval()


def whisper_encoder():
    import transformers as t

    torch.manual_seed(0)
    config = t.WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                             decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80,
                             max_source_positions=50)
    return _Hidden(t.WhisperModel(config).encoder, ["input_features"]).eval()


def wav2vec2():
    import transformers as t

    torch.manual_seed(0)
    config = _small(t.Wav2Vec2Config, conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    return _Hidden(t.Wav2Vec2Model(config), ["input_values"]).eval()
