"""EM-Net: channel and frequency learning with Mamba for 3D (and 2D) medical image segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetResBlock
from monai.networks.blocks.dynunet_block import get_conv_layer
from monai.networks.layers.factories import Conv

from mamba_monai.blocks.bfloat16_conv import CPUBFloat16Conv, cpu_bfloat16_convs
from mamba_monai.blocks.emnet import ChannelMLP, CSRMBlock, EMNetUpBlock, LayerNormNd, UnetConvBlock
from mamba_monai.blocks.norm_act import fuse_norm_act
from mamba_monai.networks.utils import channels_last_on_cpu, divisible_size_hint, instance_norms_as_group_norms
from mamba_monai.ops.utils import format_shape

__all__ = ["EMNet"]


class EMNet(nn.Module):
    """
    EM-Net of "EM-Net: Efficient Channel and Frequency Learning with Mamba for 3D Medical Image Segmentation"
    (Chang et al., MICCAI 2024, https://arxiv.org/abs/2409.17675). Supports 3D and 2D inputs.

    Encoder: a patch stem (convolution, kernel = stride = 4, then channel LayerNorm) and ``len(depths)`` stages at
    1/4, 1/8, ... of the input size with ``feature_size * 2**i`` channels, joined by LayerNorm + convolution
    (kernel = stride = 2). Stage ``i`` is a :class:`~mamba_monai.blocks.emnet.CSRMBlock`: ``fft_nums[i]`` EFL layers
    (global FFT filter + MLP) followed by ``depths[i] - fft_nums[i]`` CSR Mamba layers (bidirectional Mamba shared by
    a reinforce and a channel-squeeze branch, then a residual convolution block). Each stage's output goes through
    LayerNorm and a 1x1 MLP (C -> 4C -> C) to give its skip feature.

    Decoder: per coarser stage a transposed convolution (x2), the skip ADDED, and ``decoder_depths[j]`` CSR Mamba
    layers; then a transposed convolution (x4) to full resolution, added to a full-resolution branch (MONAI
    ``UnetrBasicBlock`` with a residual on the raw input), a ``UnetBasicBlock`` and a ``UnetOutBlock`` head. With
    ``half_res_channels`` the x4 step is two x2 steps with a convolutional stage at 1/2 resolution between them. These
    full-resolution blocks have ``full_res_channels`` channels; at ``feature_size`` (the published design) their
    3x3(x3) convolutions are most of a training step on a CPU (see ``benchmarks/profile_emnet_step.py``), which is
    why this branch runs channels-last there (``channels_last``).

    Differences from the published code: no positional embeddings and FFT filters that are resampled to the input
    size (:class:`~mamba_monai.blocks.spectral.SpectralGating`), so the network runs at any spatial size divisible by
    ``2 ** (len(depths) + 1)`` (32 for four stages; no square/cubic constraint); the reinforce and squeeze branches run
    in one Mamba call; stochastic depth is implemented.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3. Defaults to 3.
        in_channels: input channels. Defaults to 1.
        out_channels: output channels (classes incl. background). Defaults to 14.
        feature_size: channels of the first stage; stage ``i`` has ``feature_size * 2**i``. Defaults to 48.
        depths: layers per encoder stage. Defaults to (3, 3, 3, 3).
        decoder_depths: CSR Mamba layers per decoder stage, from the coarsest (next to the bottleneck) to the
            finest (1/4 resolution); ``len(depths) - 1`` values, 0 uses a convolution block. Defaults to (3, 3, 3).
        fft_nums: EFL layers at the start of each encoder stage (``0 <= fft_nums[i] <= depths[i]``).
            Defaults to (0, 0, 2, 2).
        d_state: Mamba state size. Defaults to 16.
        d_conv: Mamba causal convolution width. Defaults to 4.
        expand: Mamba inner width factor. Defaults to 2.
        norm_name: MONAI normalisation name of all convolution blocks. Defaults to "instance".
        dropout_rate: channel dropout in the CSR layers' convolution branch (the published code used 0.1).
            Defaults to 0.0.
        drop_path_rate: stochastic depth, rising linearly over the encoder layers to this value. Defaults to 0.0.
        layer_scale_init: initial layer scale of the CSR Mamba update. Defaults to 1e-6.
        filter_roi_size: the patch size the EFL filters are defined for (int or one per spatial axis, divisible by
            ``2 ** (len(depths) + 1)``): a stage at stride ``s`` stores a filter for spatial size
            ``filter_roi_size // s`` (as the published code did for its 128^3 training ROI); other input sizes
            resample it. Defaults to 128.
        deep_supervision: when True and in training mode, ``forward`` returns a list ``[full, 1/4, 1/8]`` of logits,
            each at its own resolution (the format MONAI's ``DeepSupervisionLoss`` takes; it resizes the target).
            In eval mode it returns the full-resolution tensor only. Needs ``len(depths) >= 3``. Defaults to False.
        use_checkpoint: gradient checkpointing per Mamba/EFL layer while training. Defaults to False.
        full_res_channels: channels of the full-resolution branch and head; None uses ``feature_size`` (the
            published design). Half of it cuts the convolutions there about 4x. Defaults to None.
        channels_last: on a CPU, run the full-resolution branch in the channels-last layout (oneDNN's convolutions
            on few channels are about twice as fast there), with ``fused_norm_act`` each instance norm and the leaky
            ReLU after it one :class:`~mamba_monai.blocks.InstanceNormAct` (fused numba kernels for float32 CPU
            tensors; PyTorch's channels-last ``GroupNorm`` backward was slower than the convolutions), without it
            ``GroupNorm(C, C)``: the same normalisation with the same state dict. False keeps the channels-first layout
            and InstanceNorm of mamba-monai 0.3. Outputs agree to float rounding; on a GPU the layout stays
            channels-first (only the norm's kernel differs). Defaults to True.
        logit_scale: a fixed factor on the logits (and on the deep supervision outputs). Defaults to 1.0 (the
            published network).
        fused_norm_act: with ``channels_last``, the full-resolution branch's blocks as ``NormActResBlock`` /
            ``NormActBasicBlock`` (fused norm + activation kernels, see ``channels_last``, and the 1-channel 1x1
            residual convolution as a per-channel scale); False keeps MONAI's blocks with ``GroupNorm(C, C)``
            (mamba-monai 0.3.5). The same values and state dict. Defaults to True.
        full_res_stride: 1 runs the full-resolution branch at the input's resolution (the published design); 2 runs
            it at half resolution (its first convolution at stride 2, the decoder's last up-sampling x2) and the head
            is a transposed convolution (kernel = stride = 2) to full-resolution logits, as MONAI's ``UNet`` ends:
            the branch's convolutions and norms then cost about an eighth per channel. Defaults to 1.
        full_res_convs: 3x3(x3) convolutions in the two full-resolution blocks (the branch on the input and the block
            after the last up-sampling): one value for both or a pair (input branch, decoder block). 2 as published (a
            residual block with a 1x1 residual convolution, and ``UnetBasicBlock``), 1 a single convolution, norm and
            leaky ReLU (:class:`~mamba_monai.blocks.UnetConvBlock`; no residual). With 1 for both, the only
            full-resolution convolution between ``full_res_channels`` channels is the decoder block's, one instead of
            three; (2, 1) keeps the input branch's two and drops one of the decoder block's, which with
            ``half_res_channels`` learnt faster per step in the emnet_seg3d bundle's fixed-step comparison (its
            docs). Defaults to 2.
        half_res_channels: 0 up-samples the 1/4-resolution decoder output x4 straight to the full-resolution block
            (the published design). A positive value adds a decoder stage at 1/2 resolution with that many channels:
            a transposed convolution (x2) from 1/4, a half-resolution skip ADDED (the full-resolution branch's output
            through a stride-2 residual block, MONAI's ``UnetResBlock``), a ``UnetBasicBlock``, then a transposed
            convolution (x2) to the full-resolution block. Its convolutions cost about as much as one more
            full-resolution convolution at 8 channels; in the emnet_seg3d bundle's fixed-step comparison it took the
            fast network from below MONAI's UNet to above it (the bundle's docs). Needs ``full_res_stride`` 1.
            Defaults to 0.
        full_res_bfloat16: compute the convolutions of the full- and half-resolution blocks (all but the one on the
            1-channel image) in bfloat16 when they run on float32 CPU tensors (:class:`~mamba_monai.blocks.
            CPUBFloat16Conv`: parameters, norms, scans and optimiser stay float32). On CPUs with bfloat16
            instructions (AVX512-BF16, AMX) those convolutions are most of a training step and run about 1.6x faster
            so; elsewhere leave it False. GPU tensors are unaffected. The same state dict. Defaults to False.

    ``logit_scale`` sets how fast training can move the logits. The 1x1 head reads ``full_res_channels``
    instance-normalised channels; under Adam every weight moves by about the learning rate per step, so a head on few
    channels (8 in the emnet_seg3d bundle's ``network_def``) changes the logits slowly and early training
    finds only the organs that intensity alone separates. A factor of 8 there lets the network find spleen and
    kidneys within the first 160 steps, as MONAI's UNet does (the bundle's docs have the figures). A factor is the
    same as a head initialised that much larger whose weights also learn that much faster; the argmax of the logits
    does not depend on it.

    Shapes:
        input (B, in_channels, *S) with every S divisible by ``2 ** (len(depths) + 1)`` ->
        output (B, out_channels, *S).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 14,
        feature_size: int = 48,
        depths: Sequence[int] = (3, 3, 3, 3),
        decoder_depths: Sequence[int] = (3, 3, 3),
        fft_nums: Sequence[int] = (0, 0, 2, 2),
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        norm_name: tuple | str = "instance",
        dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        filter_roi_size: int | Sequence[int] = 128,
        deep_supervision: bool = False,
        use_checkpoint: bool = False,
        full_res_channels: int | None = None,
        channels_last: bool = True,
        logit_scale: float = 1.0,
        fused_norm_act: bool = True,
        full_res_stride: int = 1,
        full_res_convs: int | Sequence[int] = 2,
        half_res_channels: int = 0,
        full_res_bfloat16: bool = False,
    ) -> None:
        super().__init__()
        depths, decoder_depths, fft_nums = tuple(depths), tuple(decoder_depths), tuple(fft_nums)
        full_res_channels = feature_size if full_res_channels is None else int(full_res_channels)
        if full_res_channels < 1:
            raise ValueError(f"`full_res_channels` must be a positive integer or None, got {full_res_channels}.")
        if full_res_stride not in (1, 2):
            raise ValueError(f"`full_res_stride` must be 1 or 2, got {full_res_stride!r}.")
        encoder_convs, decoder_convs = self._full_res_convs_pair(full_res_convs)
        if int(half_res_channels) < 0 or (half_res_channels and full_res_stride != 1):
            raise ValueError(
                f"`half_res_channels` must be 0 or a positive integer with full_res_stride 1, got {half_res_channels!r} "
                f"with full_res_stride {full_res_stride}."
            )
        self._check_args(spatial_dims, in_channels, out_channels, feature_size, depths, decoder_depths, fft_nums,
                         dropout_rate, drop_path_rate, deep_supervision)
        if not float(logit_scale) > 0:
            raise ValueError(f"`logit_scale` must be positive, got {logit_scale}.")
        self.logit_scale = float(logit_scale)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_stages = len(depths)
        self.divisor = 2 ** (self.num_stages + 1)
        self.deep_supervision = deep_supervision
        self.widths = [feature_size * 2**i for i in range(self.num_stages)]
        rois = (filter_roi_size,) * spatial_dims if isinstance(filter_roi_size, int) else tuple(filter_roi_size)
        if len(rois) != spatial_dims or any(int(r) < 1 or int(r) % self.divisor for r in rois):
            raise ValueError(
                f"`filter_roi_size` must be an int or {spatial_dims} ints, each divisible by {self.divisor}, "
                f"got {filter_roi_size!r}."
            )
        self.filter_roi_size = tuple(int(r) for r in rois)
        norm_key = (norm_name[0] if isinstance(norm_name, (tuple, list)) else norm_name).lower()
        # instance norm needs more than one voxel: it fails in the last stage's CSR conv block at a 1-voxel bottleneck
        self._bottleneck_needs_voxels = norm_key.startswith("instance") and fft_nums[-1] < depths[-1]
        layer_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, layer_scale_init=layer_scale_init,
                            dropout_rate=dropout_rate)

        self.downsamples = self._make_downsamples()
        self.stages = self._make_stages(depths, fft_nums, norm_name, drop_path_rate, use_checkpoint, layer_kwargs)
        self.skip_norms = nn.ModuleList([LayerNormNd(w) for w in self.widths])
        self.skip_mlps = nn.ModuleList([ChannelMLP(spatial_dims, w, 4 * w) for w in self.widths])
        self.full_res_channels = full_res_channels
        self.full_res_stride = full_res_stride
        self.full_res_convs = (encoder_convs, decoder_convs)
        self.encoder1: nn.Module
        if encoder_convs == 2:
            self.encoder1 = UnetrBasicBlock(spatial_dims, in_channels, full_res_channels, kernel_size=3,
                                            stride=full_res_stride, norm_name=norm_name, res_block=True)
        else:
            self.encoder1 = UnetConvBlock(spatial_dims, in_channels, full_res_channels, kernel_size=3,
                                          stride=full_res_stride, norm_name=norm_name)
        self.up_blocks = nn.ModuleList(
            [
                EMNetUpBlock(spatial_dims, self.widths[i + 1], self.widths[i], decoder_depths[self.num_stages - 2 - i],
                             upsample_kernel_size=2, norm_name=norm_name, use_checkpoint=use_checkpoint, **layer_kwargs)
                for i in reversed(range(self.num_stages - 1))
            ]
        )
        self.half_res_channels = int(half_res_channels)
        # 0 or 1 stage: ModuleLists keep the forward scriptable either way
        self.half_res_encoder, self.half_res_decoder = nn.ModuleList(), nn.ModuleList()
        if self.half_res_channels:
            self.half_res_encoder.append(UnetResBlock(spatial_dims, full_res_channels, self.half_res_channels,
                                                      kernel_size=3, stride=2, norm_name=norm_name))
            self.half_res_decoder.append(EMNetUpBlock(spatial_dims, self.widths[0], self.half_res_channels, 0,
                                                      upsample_kernel_size=2, norm_name=norm_name))
        up_full_in, up_full_factor = (self.half_res_channels, 2) if self.half_res_channels else (self.widths[0], 4)
        self.up_full = EMNetUpBlock(spatial_dims, up_full_in, full_res_channels, 0,
                                    upsample_kernel_size=up_full_factor // full_res_stride, norm_name=norm_name,
                                    num_convs=decoder_convs)
        self.out: nn.Module
        if full_res_stride == 1:
            self.out = UnetOutBlock(spatial_dims, full_res_channels, out_channels)
        else:  # logits of the half-resolution branch up-sampled, as MONAI's UNet ends
            self.out = get_conv_layer(spatial_dims, full_res_channels, out_channels, kernel_size=full_res_stride,
                                      stride=full_res_stride, conv_only=True, is_transposed=True)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            if fused_norm_act:
                self.encoder1, self.up_full = fuse_norm_act(self.encoder1), fuse_norm_act(self.up_full)
                for half_res_stage in (self.half_res_encoder, self.half_res_decoder):  # in place
                    fuse_norm_act(half_res_stage)
            for full_res_block in self._full_res_blocks():
                instance_norms_as_group_norms(full_res_block)
        self.full_res_bfloat16 = bool(full_res_bfloat16)
        if self.full_res_bfloat16:
            for full_res_block in self._full_res_blocks():  # in place: none of them is a bare convolution
                cpu_bfloat16_convs(full_res_block)
        if self.channels_last:
            self._place_full_res_weights()
        self.ds_heads = nn.ModuleList()
        if deep_supervision:  # on the decoder outputs at 1/4 and 1/8
            self.ds_heads.extend([UnetOutBlock(spatial_dims, self.widths[0], out_channels),
                                  UnetOutBlock(spatial_dims, self.widths[1], out_channels)])

    @staticmethod
    def _full_res_convs_pair(full_res_convs: int | Sequence[int]) -> tuple[int, int]:
        """(input branch, decoder block) convolutions from one value for both or a pair; each must be 1 or 2."""
        pair = (full_res_convs,) * 2 if isinstance(full_res_convs, int) else tuple(full_res_convs)
        if len(pair) != 2 or any(c not in (1, 2) for c in pair):
            raise ValueError(
                f"`full_res_convs` must be 1 or 2, or a pair of them (input branch, decoder block), got {full_res_convs!r}."
            )
        return int(pair[0]), int(pair[1])

    @staticmethod
    def _check_args(spatial_dims, in_channels, out_channels, feature_size, depths, decoder_depths, fft_nums,
                    dropout_rate, drop_path_rate, deep_supervision) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("feature_size", feature_size)):
            if int(value) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if len(depths) < 2 or any(d < 1 for d in depths):
            raise ValueError(f"`depths` must have at least 2 positive values (one per encoder stage), got {depths}.")
        if len(decoder_depths) != len(depths) - 1 or any(d < 0 for d in decoder_depths):
            raise ValueError(
                f"`decoder_depths` must have len(depths) - 1 = {len(depths) - 1} non-negative values, got {decoder_depths}."
            )
        if len(fft_nums) != len(depths) or any(not 0 <= f <= d for f, d in zip(fft_nums, depths)):
            raise ValueError(
                f"`fft_nums` must have {len(depths)} values with 0 <= fft_nums[i] <= depths[i] (depths={depths}), "
                f"got {fft_nums}."
            )
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate}.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"`drop_path_rate` must be in [0, 1), got {drop_path_rate}.")
        if deep_supervision and len(depths) < 3:
            raise ValueError(f"`deep_supervision` needs at least 3 encoder stages, got depths={depths}.")

    def _make_downsamples(self) -> nn.ModuleList:
        conv = Conv[Conv.CONV, self.spatial_dims]
        layers = [nn.Sequential(conv(self.in_channels, self.widths[0], kernel_size=4, stride=4), LayerNormNd(self.widths[0]))]
        for i in range(1, self.num_stages):
            layers.append(nn.Sequential(LayerNormNd(self.widths[i - 1]),
                                        conv(self.widths[i - 1], self.widths[i], kernel_size=2, stride=2)))
        return nn.ModuleList(layers)

    def _make_stages(self, depths, fft_nums, norm_name, drop_path_rate, use_checkpoint, layer_kwargs) -> nn.ModuleList:
        total = sum(depths)
        rates = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]
        stages, start = [], 0
        for i, (depth, fft_num) in enumerate(zip(depths, fft_nums)):
            stride = 4 * 2**i
            stages.append(
                CSRMBlock(self.spatial_dims, self.widths[i], depth, fft_num=fft_num, norm_name=norm_name,
                          filter_size=tuple(r // stride for r in self.filter_roi_size),
                          drop_path_rates=rates[start : start + depth], use_checkpoint=use_checkpoint, **layer_kwargs)
            )
            start += depth
        return nn.ModuleList(stages)

    def _full_res_blocks(self) -> tuple[nn.Module, ...]:
        """The blocks at full (and half) resolution: channels-last on a CPU with ``channels_last``."""
        return self.encoder1, self.half_res_encoder, self.half_res_decoder, self.up_full, self.out

    def _place_full_res_weights(self) -> None:
        """
        Channels-last convolution weights in the full-resolution branch while they are on a CPU (oneDNN then runs
        those convolutions channels-last, whatever the input's layout, as a 1-channel input has none), channels-first
        elsewhere. Called after construction and after every ``.to()`` / ``.cuda()`` / ``.float()``.
        """
        for block in self._full_res_blocks():
            for m in block.modules():
                if isinstance(m, (nn.modules.conv._ConvNd, CPUBFloat16Conv)):
                    weight = m.weight.data
                    placed = channels_last_on_cpu(weight) if weight.device.type == "cpu" else weight.contiguous()
                    if placed is not weight:
                        m.weight.data = placed

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        if self.channels_last:
            self._place_full_res_weights()
        return module

    def _check_input(self, x: torch.Tensor) -> None:
        shape = format_shape(x.shape)
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"EMNet expects a (B, C, *spatial) input with {self.spatial_dims} spatial dims, got shape {shape}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"EMNet expects {self.in_channels} input channels, got {x.shape[1]} (shape {shape}).")
        spatial = [int(s) for s in x.shape[2:]]
        if any([s % self.divisor != 0 for s in spatial]):
            raise ValueError(
                f"EMNet needs each spatial size divisible by {self.divisor} (2 ** (len(depths) + 1)), got spatial shape "
                f"{format_shape(spatial)} (input shape {shape}): use {divisible_size_hint(spatial, self.divisor)}; pad with "
                f"DivisiblePadd(k={self.divisor}) or use a "
                f"roi_size that is a multiple of {self.divisor}."
            )

        if self._bottleneck_needs_voxels and all([s == self.divisor for s in spatial]):
            raise ValueError(
                f"EMNet got spatial shape {format_shape(spatial)}, which leaves a single voxel at the bottleneck "
                f"(1/{self.divisor}); "
                f"the instance-normalised convolution block of the last stage's CSR Mamba layers needs more than one: "
                f"use a spatial size of at least {2 * self.divisor} along one axis (or fft_nums[-1] == depths[-1], "
                f"or another norm_name)."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self._check_input(x)
        skips = []
        h = x
        for down, stage, norm, mlp in zip(self.downsamples, self.stages, self.skip_norms, self.skip_mlps):
            h = stage(down(h))
            skips.append(mlp(norm(h)))
        dec = skips[-1]
        dec_outs = []
        for j, up in enumerate(self.up_blocks):
            dec = up(dec, skips[-2 - j])
            dec_outs.append(dec)
        # the full-resolution branch is most of a CPU step: channels-last there halves its convolutions' time
        full = self.encoder1(channels_last_on_cpu(x) if self.channels_last else x)
        for encode_half, decode_half in zip(self.half_res_encoder, self.half_res_decoder):
            dec = decode_half(dec, encode_half(full))
        logits = self._scaled(self.out(self.up_full(dec, full)).contiguous())
        if self.deep_supervision and self.training:
            outs = [logits]
            for i, head in enumerate(self.ds_heads):  # 1/4 (the last decoder output), then 1/8
                outs.append(self._scaled(head(dec_outs[-1 - i])))
            return outs
        return logits

    def _scaled(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.logit_scale == 1.0 else logits * self.logit_scale
