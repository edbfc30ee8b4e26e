"""The demo datasets: deterministic bytes, read by the real mmpretrain / mmseg / mmdet dataset classes, learnable."""

import hashlib
import importlib.util
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "tools" / "make_demo_data.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)

SCALE = 0.1  # 4 + 1 images per ImageNet class, 16 + 4 ADE scenes, 12 + 3 COCO images


def _hashes(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, pathlib.Path]:
    return demo.make_demo_data(tmp_path_factory.mktemp("demo"), scale=SCALE)


def test_cached_coordinate_grid_cannot_be_edited_by_a_caller():
    """``_grid`` is cached: every image of one size gets the same arrays, so they must refuse in-place writes."""
    yy, xx = demo._grid(6, 9)
    assert demo._grid(6, 9)[0] is yy  # really shared: this is the cache the guard is for
    for arr in (yy, xx):
        with pytest.raises(ValueError, match="read-only"):
            arr += 1
    assert yy[0, 0] == xx[0, 0] == 0.5


def test_deterministic_and_complete(data, tmp_path):
    again = demo.make_demo_data(tmp_path, scale=SCALE)
    for name in demo.DATASETS:
        first, second = _hashes(data[name]), _hashes(again[name])
        assert first == second, f"{name}: files differ between two runs with the same seed"
        assert demo.MARKER in first
    n_images = {"imagenet": 25, "ade20k": 40, "coco": 15}  # ADE: an image and a label map per scene
    for name, n in n_images.items():
        assert sum(f.endswith((".JPEG", ".jpg", ".png")) for f in _hashes(data[name])) == n
    assert not list(tmp_path.glob(".*")), "build folders left behind"
    other = demo.make_demo_data(tmp_path / "seed1", which=["imagenet"], scale=SCALE, seed=1)["imagenet"]
    assert _hashes(other)["train/circle/00000.JPEG"] != _hashes(data["imagenet"])["train/circle/00000.JPEG"]


def test_skip_rebuild_and_refuse(tmp_path):
    path = demo.make_demo_data(tmp_path, which=["imagenet"], scale=SCALE)["imagenet"]
    marker = path / demo.MARKER
    stamp = marker.stat().st_mtime_ns
    demo.make_demo_data(tmp_path, which=["imagenet"], scale=SCALE)
    assert marker.stat().st_mtime_ns == stamp, "a complete dataset was rebuilt"
    # other parameters: rebuilt in place
    demo.make_demo_data(tmp_path, which=["imagenet"], scale=0.05)
    assert len((path / "meta" / "train.txt").read_text().splitlines()) == 2 * len(demo.IMAGENET_CLASSES)
    # a killed run leaves only a build folder (its process gone), which the next run clears
    stale = [tmp_path / ".coco.partial-999999999", tmp_path / ".coco.old-999999999"]
    for folder in stale:
        (folder / "train2017").mkdir(parents=True)
    demo.make_demo_data(tmp_path, which=["coco"], scale=0.05)
    assert not any(folder.exists() for folder in stale) and (tmp_path / "coco" / demo.MARKER).is_file()
    # a folder this module did not write is never replaced
    (tmp_path / "ade20k" / "images").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        demo.make_demo_data(tmp_path, which=["ade20k"], scale=SCALE)
    with pytest.raises(ValueError):
        demo.make_demo_data(tmp_path, which=["cityscapes"])


def test_cli(tmp_path):
    assert demo.main(["--out", str(tmp_path), "--which", "coco", "--scale", "0.05"]) == 0
    assert (tmp_path / "coco" / "annotations" / "instances_val2017.json").is_file()
    assert not (tmp_path / "imagenet").exists()
    assert demo.main(["--out", str(tmp_path), "--which", "imagenet,nope"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# the real dataset classes
# ---------------------------------------------------------------------------------------------------------------


# pipelines get transform instances, not dicts: a dict's type is looked up in whichever mm package set the default
# scope last (mmpretrain, mmseg or mmdet), so LoadAnnotations could resolve to another package's class


@pytest.fixture(scope="module")
def mm():
    pytest.importorskip("mmseg", reason="the mm extra is not installed")
    import vitzoo.mm  # noqa: F401  (op stand-ins before any mm package imports mmcv.ops)


def test_mmpretrain_imagenet(data, mm):
    from mmcv.transforms import LoadImageFromFile
    from mmpretrain.datasets import CustomDataset, ImageNet

    root = data["imagenet"]
    train = ImageNet(data_root=str(root), split="train", classes=str(root / "classes.txt"))
    assert len(train) == 4 * 5 and train.CLASSES == demo.IMAGENET_CLASSES
    assert sorted(np.bincount([train.get_data_info(i)["gt_label"] for i in range(len(train))])) == [4] * 5
    # meta/val.txt and a plain folder scan agree on every label
    val = ImageNet(data_root=str(root), split="val", classes=str(root / "classes.txt"))
    scan = CustomDataset(data_root=str(root), data_prefix="val", with_label=True)
    assert scan.CLASSES == demo.IMAGENET_CLASSES and len(scan) == len(val) == 5

    def labels(ds):
        return {
            os.path.basename(os.path.dirname(i["img_path"])): i["gt_label"] for i in map(ds.get_data_info, range(5))
        }

    assert labels(val) == labels(scan) == {name: i for i, name in enumerate(demo.IMAGENET_CLASSES)}
    sample = ImageNet(
        data_root=str(root), split="train", classes=str(root / "classes.txt"), pipeline=[LoadImageFromFile()]
    )[0]
    assert sample["img"].shape == (64, 64, 3)


def test_mmseg_ade20k(data, mm):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import ADE20KDataset
    from mmseg.datasets.transforms import LoadAnnotations

    used = {demo.ADE20K_WALL, demo.ADE20K_SKY, demo.ADE20K_FLOOR, demo.ADE20K_GRASS, *demo.ADE20K_LABELS.values()}
    for folder, n in (("training", 16), ("validation", 4)):
        dataset = ADE20KDataset(
            data_root=str(data["ade20k"]),
            data_prefix=dict(img_path=f"images/{folder}", seg_map_path=f"annotations/{folder}"),
            pipeline=[LoadImageFromFile(), LoadAnnotations()],
        )
        assert len(dataset) == n and len(dataset.metainfo["classes"]) == 150
        values = set()
        for sample in dataset:
            seg = sample["gt_seg_map"]
            assert seg.shape == sample["img"].shape[:2] == (128, 128)
            values |= set(np.unique(seg).tolist())
        # reduce_zero_label: index + 1 becomes the class index, "other" (0) becomes 255
        assert values <= {v - 1 for v in used} | {255}, values
        assert 255 in values and len(values) >= 4


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under numpy 2
def test_mmdet_coco(data, mm):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations
    from pycocotools.coco import COCO

    classes = CocoDataset.METAINFO["classes"]
    for split, n in (("train", 12), ("val", 3)):
        ann_file = data["coco"] / "annotations" / f"instances_{split}2017.json"
        coco = COCO(str(ann_file))
        assert len(coco.getImgIds()) == n and len(coco.getCatIds()) == 80
        dataset = CocoDataset(
            data_root=str(data["coco"]),
            ann_file=f"annotations/instances_{split}2017.json",
            data_prefix=dict(img=f"{split}2017/"),
            pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True, poly2mask=False)],
        )
        assert len(dataset) == n
        for sample in dataset:
            info = coco.loadImgs(sample["img_id"])[0]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=sample["img_id"]))
            assert 1 <= len(anns) <= 4 and len(sample["gt_bboxes"]) == len(anns) == len(sample["gt_masks"])
            assert type(sample["gt_masks"]).__name__ == "PolygonMasks"
            # labels index mmdet's 80 names: the category ids map through the full category list
            names = {coco.loadCats(a["category_id"])[0]["name"] for a in anns}
            assert {classes[i] for i in sample["gt_bboxes_labels"]} == names
            for ann in anns:
                mask = coco.annToMask(ann)
                assert mask.shape == (info["height"], info["width"])
                assert abs(int(mask.sum()) - ann["area"]) <= 0.05 * ann["area"] + 4
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann["bbox"]
                assert abs(xs.min() - x) <= 1 and abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.min() - y) <= 1


# ---------------------------------------------------------------------------------------------------------------
# learnable
# ---------------------------------------------------------------------------------------------------------------


def _nearest_centroid_accuracy(x_train, y_train, x_val, y_val) -> float:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    classes = np.unique(y_train)
    centroids = np.stack([x_train[y_train == c].mean(0) for c in classes])
    pred = classes[((x_val[:, None] - centroids) ** 2).sum(-1).argmin(1)]
    return float((pred == y_val).mean())


def test_ade20k_regions_learnable(data):
    """Background classes are told apart by colour and texture: nearest centroid on 8x8 patch statistics."""

    def patches(folder: str) -> tuple[np.ndarray, np.ndarray]:
        feats, labels = [], []
        for img_path in sorted((data["ade20k"] / "images" / folder).glob("*.jpg")):
            img = np.asarray(Image.open(img_path), np.float32).reshape(16, 8, 16, 8, 3) / 255
            label = np.asarray(Image.open(data["ade20k"] / "annotations" / folder / f"{img_path.stem}.png"))
            label = label.reshape(16, 8, 16, 8).transpose(0, 2, 1, 3).reshape(256, 64)
            pure = (label == label[:, :1]).all(1)  # patches of one label only
            gray = img.mean(-1)
            stats = np.concatenate([img.mean((1, 3)), gray.std((1, 3))[..., None]], -1).reshape(256, 4)
            feats.append(stats[pure])
            labels.append(label[pure, 0])
        return np.concatenate(feats), np.concatenate(labels)

    x_train, y_train = patches("training")
    x_val, y_val = patches("validation")
    background = np.isin(y_val, [demo.ADE20K_WALL, demo.ADE20K_SKY, demo.ADE20K_FLOOR, demo.ADE20K_GRASS])
    chance = np.bincount(y_val[background]).max() / background.sum()
    accuracy = _nearest_centroid_accuracy(x_train, y_train, x_val[background], y_val[background])
    assert accuracy > max(0.8, chance + 0.2), (accuracy, chance)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_shape_classes_learnable(data):
    """Every category is one shape: two invariant mask features (fill of the enclosing circle, hollow centre)
    separate the COCO categories on val with a nearest-centroid classifier fitted on train."""
    from pycocotools.coco import COCO

    # more than the shared scale-0.1 copy: enough shapes of every kind
    root = demo.make_demo_data(data["coco"].parent.parent / "coco_more", which=["coco"], scale=0.5)["coco"]

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        coco = COCO(str(root / "annotations" / f"instances_{split}2017.json"))
        feats, labels = [], []
        for ann in coco.loadAnns(coco.getAnnIds()):
            ys, xs = np.nonzero(coco.annToMask(ann))
            cy, cx = ys.mean(), xs.mean()
            radius = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2).max() + 0.5
            fill = len(ys) / (np.pi * radius**2)
            hollow = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2).min() / radius
            feats.append([fill, hollow])
            labels.append(ann["category_id"])
        return np.array(feats), np.array(labels)

    x_train, y_train = features("train")
    x_val, y_val = features("val")
    assert set(y_train) == set(demo.COCO_CATEGORY_IDS.values())
    assert _nearest_centroid_accuracy(x_train, y_train, x_val, y_val) > 0.8
