"""Vision Transformer built from torchvision's VisionTransformer modules, one encoder layer per block.

Attention backend: on CPU in torch 2.x, scaled_dot_product_attention (and so
nn.MultiheadAttention) dispatches to a flash kernel whose backward is not itself
differentiable and which has no forward-mode AD, so Hessian-vector products (double
backward or torch.func jvp-over-grad) fail with "derivative for
aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented" (checked on
torch 2.14). The fused CUDA kernels are reported to share it (pytorch/pytorch#116350 for
flash, #117629 for memory-efficient). attention="math" (the default) pins the MATH
backend, which is composed of differentiable ops; attention="fused" leaves the choice to
PyTorch (faster, first-order only).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer

from trd.models.base import TrdModel

ATTENTION_BACKENDS = ("math", "fused")
SMALL_IMAGE_MAX_SIZE = 64


def largest_divisor_up_to(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


class PatchEmbedding(nn.Module):
    """Patchify conv, prepend the class token, add position embeddings."""

    def __init__(self, vit: VisionTransformer, image_size: int):
        super().__init__()
        self.image_size = image_size
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            # Position embeddings are fixed to the build-time grid; any other size would fail
            # with an opaque broadcasting error further down.
            raise ValueError(
                f"vit: built for {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}; "
                f"resize inputs or build with image_size={x.shape[-1]}"
            )
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        class_token = self.class_token.expand(x.shape[0], -1, -1)
        x = torch.cat([class_token, x], dim=1)
        return self.dropout(x + self.pos_embedding)


class EncoderLayer(nn.Module):
    """torchvision's pre-norm EncoderBlock computation over its own submodules, with a chosen attention backend."""

    def __init__(self, block: EncoderBlock, attention: str):
        super().__init__()
        self.attention = attention
        self.ln_1 = block.ln_1
        self.self_attention = block.self_attention
        self.dropout = block.dropout
        self.ln_2 = block.ln_2
        self.mlp = block.mlp

    def _backend(self) -> contextlib.AbstractContextManager:
        return sdpa_kernel(SDPBackend.MATH) if self.attention == "math" else contextlib.nullcontext()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        with self._backend():
            y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class ClassTokenPool(nn.Module):
    """Final LayerNorm, then the class token's embedding as the image's features."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)[:, 0]


class ViT(TrdModel):
    def __init__(
        self,
        num_classes: int,
        image_size: int,
        *,
        patch: int | None = None,
        depth: int = 4,
        width: int = 128,
        heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        attention: str = "math",
    ):
        if patch is None:
            patch = 4 if image_size <= SMALL_IMAGE_MAX_SIZE else 16
        if mlp_dim is None:
            mlp_dim = 4 * width
        if patch < 1 or image_size % patch != 0:
            raise ValueError(
                f"vit: image_size {image_size} is not divisible by patch {patch}; "
                f"pick a patch that divides it (e.g. patch={largest_divisor_up_to(image_size, patch)}) or resize the images"
            )
        if depth < 1 or width < 1 or heads < 1 or mlp_dim < 1:
            raise ValueError(f"vit: depth, width, heads and mlp_dim must be >= 1, got {depth}, {width}, {heads}, {mlp_dim}")
        if width % heads != 0:
            raise ValueError(f"vit: width {width} is not divisible by heads {heads}; choose heads dividing width")
        if attention not in ATTENTION_BACKENDS:
            raise ValueError(f"vit: unknown attention {attention!r}; valid ones are {list(ATTENTION_BACKENDS)}")
        options = {
            "patch": patch, "depth": depth, "width": width, "heads": heads, "mlp_dim": mlp_dim,
            "dropout": dropout, "attention_dropout": attention_dropout, "attention": attention,
        }
        super().__init__("vit", num_classes, image_size, options)

        # Built only to reuse (and share the initialisation of) its parameters; the
        # torchvision module itself is not kept.
        vit = VisionTransformer(
            image_size=image_size, patch_size=patch, num_layers=depth, num_heads=heads,
            hidden_dim=width, mlp_dim=mlp_dim, dropout=dropout, attention_dropout=attention_dropout,
            num_classes=num_classes,
        )
        self.embed = PatchEmbedding(vit, image_size)
        self.encoder = nn.ModuleList(EncoderLayer(block, attention) for block in vit.encoder.layers)
        block_names = ["embed"] + [f"encoder.{i}" for i in range(depth)]
        self._finish(block_names, ClassTokenPool(vit.encoder.ln), feature_dim=width)
