"""Draw a segmentation model's predictions over images as PNG overlays.

    python tools/visualize.py CONFIG CHECKPOINT [--images DIR_OR_FILE ...] [--num 4] [--out DIR] [--alpha 0.5]

Without ``--images`` the first ``--num`` images of the config's test set are drawn. Each PNG shows the image, and
the image blended with the predicted classes in the dataset's palette, side by side.
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mm_common import ConfigError, load_config  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Overlay segmentation predictions on images")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--images", nargs="+", help="image files or folders (default: the config's test set)")
    parser.add_argument("--num", type=int, default=4, help="how many test-set images without --images")
    parser.add_argument("--out", default="work_dirs/overlays", help="output folder")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def _image_paths(cfg, images: list[str] | None, num: int) -> list[Path]:
    if images:
        paths = []
        for item in map(Path, images):
            paths += (
                sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if item.is_dir() else [item]
            )
        missing = [str(p) for p in paths if not p.is_file()]
        if missing or not paths:
            raise ConfigError(f"no such image file(s): {missing or images}")
        return paths
    dataset = cfg.test_dataloader.dataset
    folder = Path(dataset.data_root) / dataset.data_prefix.img_path
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:num]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    """``[H, 2W, 3]`` uint8: the RGB image, then the image blended with each pixel's class colour."""
    colours = palette[labels % len(palette)]
    blended = (image * (1 - alpha) + colours * alpha).round().astype(np.uint8)
    return np.concatenate([image.round().astype(np.uint8), blended], axis=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise ConfigError(f"checkpoint {args.checkpoint!r} not found")
    cfg = load_config(args.config, args.cfg_options, None, "none")
    from mmseg.apis import inference_model, init_model

    model = init_model(cfg, args.checkpoint, device="cpu")
    palette = np.array(model.dataset_meta["palette"], dtype=np.float64)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in _image_paths(cfg, args.images, args.num):
        result = inference_model(model, str(path))
        labels = result.pred_sem_seg.data[0].cpu().numpy()
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        target = out_dir / f"{path.stem}_overlay.png"
        Image.fromarray(overlay(image, labels, palette, args.alpha)).save(target)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
