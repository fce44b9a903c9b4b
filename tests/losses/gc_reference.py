"""Small models and the slow, obvious float64 reference for the gradient-collision tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, classes)).double()


def bn_cnn(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 6),
        nn.BatchNorm1d(6),
        nn.Softplus(),
        nn.Linear(6, classes),
    ).double()
    # Non-trivial affine parameters, so that gamma/beta terms of the double backward matter.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.3)
    return model.train()


def wide_cnn(classes: int = 3) -> nn.Module:
    """Its second conv's weight outgrows a chunk's input, so its HVP weight terms are deferred."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, classes),
    ).double()
    return model.train()


class TinyAttention(nn.Module):
    """One ViT-style block on a sequence of patch tokens, attention through F.scaled_dot_product_attention."""

    def __init__(self, dim: int = 8, heads: int = 2, classes: int = 3):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(4, dim)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.embed(x)
        batch, length, dim = tokens.shape
        q, k, v = self.qkv(self.norm(tokens)).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, dim)
        return self.head((tokens + self.proj(attended)).mean(1))


def naive_collision(model, inputs, targets, chunks, normalized):
    """Explicit g_m per chunk (create_graph), explicit sum over ALL pairs, autograd.grad of that.

    Returns (loss, [grad per trainable parameter], stats dict).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    flats = []
    for x, y in zip(inputs.chunk(chunks), targets.chunk(chunks)):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True, allow_unused=True)
        flats.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]))
    total = 0
    cosines = []
    for m in range(chunks):
        for n in range(m + 1, chunks):
            dot = torch.dot(flats[m], flats[n])
            cosine = dot / (flats[m].norm() * flats[n].norm())
            cosines.append(cosine.detach())
            total = total + (cosine if normalized else dot)
    loss = total / math.comb(chunks, 2)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    summed = torch.stack(flats).sum(0).detach()
    stats = {
        "total_sq_norm": summed.dot(summed),
        "sum_chunk_sq_norms": sum(f.detach().dot(f.detach()) for f in flats),
        "mean_pair_cosine": torch.stack(cosines).mean(),
    }
    return loss.detach(), grads, stats
