"""Patch embedding, merging (down x2) and expanding (up x2) for 2D and 3D maps, all TorchScript-scriptable."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import PatchEmbed
from monai.networks.nets.swin_unetr import PatchMergingV2

from mamba_monai.ops.utils import format_shape

__all__ = ["PatchExpanding", "ScriptablePatchEmbed", "ScriptablePatchMerging"]


class ScriptablePatchEmbed(PatchEmbed):
    """
    MONAI's :class:`~monai.networks.blocks.PatchEmbed` (Swin Transformer patch embedding: a convolution with
    kernel = stride = ``patch_size``, then an optional LayerNorm over channels) with a forward that TorchScript can
    compile. Same constructor, parameters (state dict keys) and output as MONAI's: the input is zero-padded at the end
    of each axis to a multiple of ``patch_size``.

    Args:
        patch_size: kernel and stride of the projection, an int or one per spatial axis. Defaults to 2.
        in_chans: input channels. Defaults to 1.
        embed_dim: output channels. Defaults to 48.
        norm_layer: normalisation over channels (a class called with ``embed_dim``), or None. Defaults to LayerNorm.
        spatial_dims: 2 or 3. Defaults to 3.

    Shapes:
        (B, in_chans, *S) -> (B, embed_dim, *ceil(S / patch_size)), channels-first.
    """

    def __init__(
        self,
        patch_size: Sequence[int] | int = 2,
        in_chans: int = 1,
        embed_dim: int = 48,
        norm_layer: type[nn.Module] | None = nn.LayerNorm,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__(patch_size, in_chans, embed_dim, norm_layer, spatial_dims)  # type: ignore[arg-type]
        self.spatial_dims = spatial_dims
        self.patch_sizes = [int(p) for p in self.patch_size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, *S) -> (B, embed_dim, *ceil(S / patch_size))."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"ScriptablePatchEmbed expects a (B, C, *spatial) tensor with {self.spatial_dims} spatial dims, "
                f"got shape {format_shape(x.shape)}."
            )
        pad: list[int] = []  # F.pad order: last axis first, (before, after) each
        for i in range(self.spatial_dims - 1, -1, -1):
            p = self.patch_sizes[i]
            pad.extend([0, (p - x.shape[2 + i] % p) % p])
        if sum(pad) > 0:
            x = F.pad(x, pad)
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x.movedim(1, -1)).movedim(-1, 1)
        return x


class ScriptablePatchMerging(PatchMergingV2):
    """
    MONAI's :class:`~monai.networks.nets.swin_unetr.PatchMergingV2` (Swin Transformer patch merging, "Liu et al.,
    Swin Transformer", https://arxiv.org/abs/2103.14030) with a forward that TorchScript can compile: each 2x2 (2D)
    or 2x2x2 (3D) neighbourhood is concatenated over channels in MONAI's order, layer-normalised and projected
    ``2**spatial_dims * dim -> 2 * dim`` by a linear map without bias. Same constructor, parameters and output as
    MONAI's (odd sizes are zero-padded at the end); the neighbourhoods are gathered by one reshape and permute
    instead of strided slices.

    Args:
        dim: input channels C.
        norm_layer: normalisation of the ``2**spatial_dims * C`` concatenated channels. Defaults to LayerNorm.
        spatial_dims: 2 or 3. Defaults to 3.

    Shapes:
        (B, *S, C) -> (B, *ceil(S / 2), 2C), channels-last.
    """

    def __init__(self, dim: int, norm_layer: type[nn.Module] = nn.LayerNorm, spatial_dims: int = 3) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        if dim < 1:
            raise ValueError(f"`dim` must be positive, got {dim}.")
        super().__init__(dim, norm_layer, spatial_dims)  # type: ignore[arg-type]
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *S, C) -> (B, *ceil(S / 2), 2C)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"ScriptablePatchMerging expects a channels-last (B, *spatial, C) tensor with C={self.dim} and "
                f"{self.spatial_dims} spatial dims, got shape {format_shape(x.shape)}."
            )
        pad: list[int] = [0, 0]
        for i in range(self.spatial_dims - 1, -1, -1):
            pad.extend([0, x.shape[1 + i] % 2])
        if sum(pad) > 0:
            x = F.pad(x, pad)
        b, c = x.shape[0], x.shape[-1]
        if self.spatial_dims == 2:
            h, w = x.shape[1] // 2, x.shape[2] // 2
            # MONAI's order: x[:, j::2, i::2] for (i, j) in product(range(2), range(2)) -> (w offset, h offset, C)
            x = x.reshape(b, h, 2, w, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h, w, 4 * c)
        else:
            d, h, w = x.shape[1] // 2, x.shape[2] // 2, x.shape[3] // 2
            # MONAI's order: x[:, i::2, j::2, k::2] for (i, j, k) in product(...) -> (d, h, w offset, C)
            x = x.reshape(b, d, 2, h, 2, w, 2, c).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, d, h, w, 8 * c)
        return self.reduction(self.norm(x))


class PatchExpanding(nn.Module):
    """
    Patch expanding, the inverse of :class:`ScriptablePatchMerging` (MONAI's ``PatchMergingV2``) in resolution and
    layout, as in Swin-Unet ("Swin-Unet: Unet-like Pure Transformer for Medical Image Segmentation", Cao et al.,
    https://arxiv.org/abs/2105.05537) and VM-UNet, for 2D and 3D channels-last maps::

        y = Linear(C -> 2**spatial_dims * C/2, no bias)(x)     # per voxel
        y = pixel_shuffle(y)                                   # every voxel -> a 2x2 (2x2x2) block of C/2 channels
        y = norm(y)                                            # over the C/2 channels

    The shuffle reads the ``2**spatial_dims`` channel groups in the order in which ``PatchMergingV2`` concatenates
    a neighbourhood, so shuffling the concatenation back gives the original map exactly (the tests check this).

    Args:
        dim: input channels C, even (the output has C // 2).
        norm_layer: normalisation over the C // 2 output channels (a class called with C // 2). Defaults to LayerNorm.
        spatial_dims: 2 or 3. Defaults to 3.

    Shapes:
        (B, *S, C) -> (B, *2S, C // 2), channels-last.
    """

    def __init__(self, dim: int, norm_layer: type[nn.Module] = nn.LayerNorm, spatial_dims: int = 3) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        if dim < 2 or dim % 2:
            raise ValueError(f"`dim` must be an even number >= 2 (the output has dim // 2 channels), got {dim}.")
        self.dim = dim
        self.out_dim = dim // 2
        self.spatial_dims = spatial_dims
        self.expand = nn.Linear(dim, 2**spatial_dims * self.out_dim, bias=False)
        self.norm = norm_layer(self.out_dim)

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *S, 2**spatial_dims * c) -> (B, *2S, c): undoes ``PatchMergingV2``'s neighbourhood concatenation."""
        b = x.shape[0]
        c = x.shape[-1] // (1 << self.spatial_dims)
        if self.spatial_dims == 2:
            h, w = x.shape[1], x.shape[2]
            # channel groups in (w offset, h offset) order -> (B, H, h offset, W, w offset, c)
            return x.reshape(b, h, w, 2, 2, c).permute(0, 1, 4, 2, 3, 5).reshape(b, 2 * h, 2 * w, c)
        d, h, w = x.shape[1], x.shape[2], x.shape[3]
        # channel groups in (d, h, w offset) order -> (B, D, d offset, H, h offset, W, w offset, c)
        x = x.reshape(b, d, h, w, 2, 2, 2, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
        return x.reshape(b, 2 * d, 2 * h, 2 * w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *S, C) -> (B, *2S, C // 2)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"PatchExpanding expects a channels-last (B, *spatial, C) tensor with C={self.dim} and "
                f"{self.spatial_dims} spatial dims, got shape {format_shape(x.shape)}."
            )
        return self.norm(self.shuffle(self.expand(x)))
