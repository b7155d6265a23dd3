"""Image preprocessing declared in a recipe (resize, center crop, colour, scale, normalize, layout).
Standalone (numpy + Pillow) so that the same definition can run wherever images enter a model."""

import numpy as np


def load_image(path, cfg, formats=None):
    """One image file as a float32 array laid out per cfg["layout"] without the batch dimension; `formats`
    (PIL's names) limits what is read, else any format PIL reads."""
    from PIL import Image

    with Image.open(path, formats=formats) as image:
        image = image.convert("L" if cfg["color"] == "L" else "RGB")
        if cfg.get("resize"):
            width, height = image.size
            ratio = cfg["resize"] / min(width, height)
            image = image.resize((max(1, round(width * ratio)), max(1, round(height * ratio))), Image.BILINEAR)
        if cfg.get("center_crop"):
            size = cfg["center_crop"]
            width, height = image.size
            left, top = (width - size) // 2, (height - size) // 2
            image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if cfg["color"] == "BGR":
        pixels = pixels[:, :, ::-1]
    pixels = pixels * np.float32(cfg["scale"])
    if cfg.get("mean"):
        pixels = pixels - np.asarray(cfg["mean"], dtype=np.float32)
    if cfg.get("std"):
        pixels = pixels / np.asarray(cfg["std"], dtype=np.float32)
    if cfg["layout"] == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.float32)
