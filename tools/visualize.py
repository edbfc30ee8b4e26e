"""Draw a segmentation model's predictions over images as PNG overlays.

    python tools/visualize.py CONFIG CHECKPOINT [--images DIR_OR_FILE ...] [--num 4] [--out DIR] [--alpha 0.5]

Without ``--images`` the first ``--num`` images of the config's test set are drawn. Each PNG shows labelled panels
side by side: the image, its ground truth (test-set images, whose annotation is known) and the prediction, each
class map blended over the image in the dataset's palette (ignored pixels left as the image).
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mm_common import ConfigError, load_config  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
IGNORE_INDEX = 255  # mmseg's ignored label (ADE20K's "other" after reduce_zero_label)
CAPTION_HEIGHT = 16  # pixels of the caption band above each panel


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


def blend(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    """``[H, W, 3]`` uint8: the image blended with each pixel's class colour; ignored pixels stay the image."""
    colours = palette[labels % len(palette)]
    mixed = np.where((labels == IGNORE_INDEX)[..., None], image, image * (1 - alpha) + colours * alpha)
    return mixed.round().astype(np.uint8)


def captioned(panel: np.ndarray, caption: str) -> np.ndarray:
    """The panel under a black band with ``caption`` written in it."""
    band = Image.new("RGB", (panel.shape[1], CAPTION_HEIGHT))
    ImageDraw.Draw(band).text((3, 2), caption, fill=(255, 255, 255))
    return np.concatenate([np.asarray(band), panel], axis=0)


def overlay(
    image: np.ndarray, prediction: np.ndarray, palette: np.ndarray, alpha: float, truth: np.ndarray | None = None
) -> np.ndarray:
    """``[16 + H, k W, 3]`` uint8: captioned panels "image", "ground truth" (when ``truth`` is given), "prediction"."""
    panels = [("image", image.round().astype(np.uint8))]
    if truth is not None:
        panels.append(("ground truth", blend(image, truth, palette, alpha)))
    panels.append(("prediction", blend(image, prediction, palette, alpha)))
    return np.concatenate([captioned(panel, caption) for caption, panel in panels], axis=1)


def ground_truth(cfg, image_path: Path) -> np.ndarray | None:
    """The test-set annotation of ``image_path`` as mmseg loads it (``reduce_zero_label`` as the test pipeline
    sets it), or None for an image outside the test set."""
    dataset = cfg.test_dataloader.dataset
    root = Path(dataset.data_root)
    if image_path.parent.resolve() != (root / dataset.data_prefix.img_path).resolve():
        return None
    seg = root / dataset.data_prefix.seg_map_path / (image_path.stem + dataset.get("seg_map_suffix", ".png"))
    if not seg.is_file():
        return None
    labels = np.asarray(Image.open(seg), dtype=np.int64)
    loads = [step for step in dataset.pipeline if step.get("type") == "LoadAnnotations"]
    if loads and loads[0].get("reduce_zero_label", False):  # class 0 ("other") is ignored, the rest move down one
        labels = np.where(labels == 0, IGNORE_INDEX, labels - 1)
    return labels


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
        panels = overlay(image, labels, palette, args.alpha, ground_truth(cfg, path))
        Image.fromarray(panels).save(target)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
