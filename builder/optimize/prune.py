"""Global unstructured magnitude pruning of the PyTorch model's Conv and Linear weights, before
export. Writes the pruned state_dict (weights.pt) that the export step loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import MdbuildError
from builder.optimize.summary import write_summary
from builder.sources.pytorch import load_module


def reads(config: dict[str, Any]) -> list[str]:
    return ["prune.amount", "model.source", "model.seed", "model.factory", "model.kwargs"]  # what load_module reads


def check(config: dict[str, Any]) -> None:
    amount = config["prune"]["amount"]
    if not 0.0 < amount < 1.0:
        raise MdbuildError(f"pruning amount {amount} is not a fraction", "prune.amount", "choose a value between 0 and 1, e.g. 0.3")


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    import torch
    from torch.nn.utils import prune

    amount = ctx.config["prune"]["amount"]
    module = load_module(ctx)
    layers = [(m, "weight") for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear))]
    if not layers:
        raise MdbuildError("the model has no Conv or Linear layers to prune", "optimize", "remove 'prune' from optimize")
    ctx.progress(f"pruning {amount:.0%} of {len(layers)} weight tensors")
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    for layer, name in layers:
        prune.remove(layer, name)
    pruned = sum(int((layer.weight == 0).sum()) for layer, _ in layers)
    prunable = sum(layer.weight.numel() for layer, _ in layers)
    total = sum(p.numel() for p in module.parameters())
    torch.save(module.state_dict(), out / "weights.pt")
    write_summary(out, "prune", amount=amount, layers=len(layers), zero_weights=pruned,
                  sparsity_prunable=pruned / prunable, sparsity_total=pruned / total)
