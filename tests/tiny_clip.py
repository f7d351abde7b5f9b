"""A tiny open_clip model with random weights, saved the way open_clip reads a local model:
a folder with ``open_clip_config.json`` and ``open_clip_pytorch_model.bin`` (its
``"local-dir:<path>"`` schema), or a bare checkpoint file for a registered architecture.
Offline and fast: 32 px images, one transformer layer per tower."""

import json
import os

TINY_MODEL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def save_tiny_clip_folder(folder, seed=0):
    """Write a random tiny open_clip model into ``folder``; returns the folder path (str)."""
    import open_clip
    import torch

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=TINY_MODEL_CFG["embed_dim"],
                           vision_cfg=open_clip.CLIPVisionCfg(**TINY_MODEL_CFG["vision_cfg"]),
                           text_cfg=open_clip.CLIPTextCfg(**TINY_MODEL_CFG["text_cfg"]))
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": {}}, f)
    torch.save(model.state_dict(), os.path.join(folder, "open_clip_pytorch_model.bin"))
    return str(folder)


def register_tiny_arch(folder, name="sei-tiny-clip"):
    """Register the tiny architecture with open_clip under ``name`` (this process only), so that
    the weights file of :func:`save_tiny_clip_folder` loads as ``model=<file>, arch=name``."""
    import open_clip

    if name not in open_clip.list_models():
        path = os.path.join(folder, f"{name}.json")
        with open(path, "w") as f:
            json.dump(TINY_MODEL_CFG, f)
        open_clip.add_model_config(path)
    return name
