"""Gemma 4 image preprocessing with the stock processor's output and fewer copies.

``transformers``' ``Gemma4ImageProcessor`` resizes each frame (aspect-preserving,
bicubic with antialias), rescales it, cuts it into 16x16 patches with a
channel-innermost permute of the (C, H, W) tensor, pads the patches to
``max_patches`` and stacks the frames. At 280 soft tokens a 340x256 Kinetics
frame becomes 2,520 patches of 768 values, and the permute (an element-wise
gather with stride H*W) plus the pad and the stack copies dominate the
DataLoader workers' time.

``FastGemma4ImageProcessor`` runs the same resize (the stock method) on a
channels-last tensor, which torch's antialiased uint8 kernels process about
twice as fast and return channels-last, then copies the patches (rows of
``patch_size * channels`` contiguous values) straight into one preallocated,
already padded batch tensor. The result is identical, element for element (tests/test_speed.py
compares it with the stock processor on several frame sizes), and with
``do_rescale=False`` (``VisionChatCollator(uint8_pixels=True)``) it stays uint8.

Training uses it through ``fast_processor``, a shallow copy of the processor:
the processor saved with the adapter is the stock one.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers.models.gemma4.image_processing_gemma4 import (
    _SUPPORTED_SOFT_TOKENS,
    Gemma4ImageProcessor,
)


class FastGemma4ImageProcessor(Gemma4ImageProcessor):
    """Same outputs as ``Gemma4ImageProcessor``; see the module docstring."""

    def _preprocess(
        self,
        images: list[Any],
        do_resize: bool,
        resample: Any,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Any,
        image_std: Any,
        return_tensors: Any,
        patch_size: int | None = None,
        max_soft_tokens: int | None = None,
        pooling_kernel_size: int | None = None,
        **kwargs: Any,
    ):
        import torch
        from transformers.image_processing_utils import BatchFeature

        if max_soft_tokens not in _SUPPORTED_SOFT_TOKENS:
            raise ValueError(
                f"`max_soft_tokens` must be one of {_SUPPORTED_SOFT_TOKENS}, got {max_soft_tokens}."
            )
        max_patches = max_soft_tokens * pooling_kernel_size**2
        prepared = []
        for image in images:
            # Channels-last in, channels-last out: torch's antialiased uint8 resize runs
            # ~2x faster on it, and each patch row is then contiguous (no transpose).
            image = image.unsqueeze(0).contiguous(memory_format=torch.channels_last)
            if do_resize:
                image = self.aspect_ratio_preserving_resize(
                    image=image,
                    patch_size=patch_size,
                    max_patches=max_patches,
                    pooling_kernel_size=pooling_kernel_size,
                    resample=resample,
                )
            image = self.rescale_and_normalize(
                image, do_rescale, rescale_factor, do_normalize, image_mean, image_std
            )
            prepared.append(image[0])
        channels = prepared[0].shape[0]
        pixel_values = torch.empty(
            (len(prepared), max_patches, patch_size * patch_size * channels),
            dtype=prepared[0].dtype,
            device=prepared[0].device,
        )
        position_ids = torch.full(
            (len(prepared), max_patches, 2), -1, dtype=torch.long, device=prepared[0].device
        )
        num_soft_tokens_per_image = []
        for i, image in enumerate(prepared):
            _, height, width = image.shape
            ph, pw = height // patch_size, width // patch_size
            n = ph * pw
            hwc = image.permute(1, 2, 0).contiguous()  # a view when already channels-last
            patches = hwc.reshape(ph, patch_size, pw, patch_size, channels).permute(0, 2, 1, 3, 4)
            pixel_values[i, :n].view(ph, pw, patch_size, patch_size, channels).copy_(patches)
            pixel_values[i, n:] = 0  # padding patches, as the stock processor pads
            ys, xs = torch.meshgrid(
                torch.arange(ph, device=image.device),
                torch.arange(pw, device=image.device),
                indexing="ij",
            )
            position_ids[i, :n, 0] = xs.reshape(-1)
            position_ids[i, :n, 1] = ys.reshape(-1)
            num_soft_tokens_per_image.append(n // pooling_kernel_size**2)
        data = {
            "pixel_values": pixel_values,
            "image_position_ids": position_ids,
            "num_soft_tokens_per_image": num_soft_tokens_per_image,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


def fast_processor(processor):
    """A shallow copy of ``processor`` whose image processor is the fast one."""
    out = copy.copy(processor)
    fast = FastGemma4ImageProcessor.__new__(FastGemma4ImageProcessor)
    fast.__dict__.update(processor.image_processor.__dict__)
    out.image_processor = fast
    return out
