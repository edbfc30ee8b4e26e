"""Generate one model card per registered model in ``model_cards/`` from one dict per model.

Each card dict is assembled from the model's pretrained cfg, vitzoo's measurements (``vitzoo.stats``), the paper
table, the committed CPU benchmark (``benchmarks/results/cpu_models.json``) and the committed check against the
official code (``benchmarks/results/official_parity.json``) and, where measured, the input-size benchmark
(``benchmarks/results/cpu_resolution.json``). Usage: ``python tools/gen_model_cards.py``;
``--check`` exits 1 when a committed card is stale.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import timm

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.hub import weight_sources
from vitzoo.paper_table import PAPER_TABLE
from vitzoo.stats import model_stats

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_resolution import COUNTERPARTS  # noqa: E402
from official_models import OFFICIAL_NAMES  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
RESULTS = ROOT / "benchmarks" / "results"

_VSA_CITATION = (
    "@inproceedings{zhang2022vsa,\n"
    "  title={VSA: Learning Varied-Size Window Attention in Vision Transformers},\n"
    "  author={Zhang, Qiming and Xu, Yufei and Zhang, Jing and Tao, Dacheng},\n"
    "  booktitle={European Conference on Computer Vision (ECCV)},\n  year={2022}\n}"
)

FAMILIES = {
    "van": dict(
        title="Visual Attention Network",
        arxiv="2202.09741",
        citation=(
            "@article{guo2023visual,\n  title={Visual Attention Network},\n"
            "  author={Guo, Meng-Hao and Lu, Cheng-Ze and Liu, Zheng-Ning and Cheng, Ming-Ming and Hu, Shi-Min},\n"
            "  journal={Computational Visual Media},\n  year={2023}\n}"
        ),
    ),
    "biformer": dict(
        title="BiFormer: Vision Transformer with Bi-Level Routing Attention",
        arxiv="2303.08810",
        citation=(
            "@inproceedings{zhu2023biformer,\n  title={BiFormer: Vision Transformer with Bi-Level Routing Attention},\n"
            "  author={Zhu, Lei and Wang, Xinjiang and Ke, Zhanghan and Zhang, Wayne and Lau, Rynson},\n"
            "  booktitle={CVPR},\n  year={2023}\n}"
        ),
    ),
    "cswin": dict(
        title="CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows",
        arxiv="2107.00652",
        citation=(
            "@inproceedings{dong2022cswin,\n"
            "  title={CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows},\n"
            "  author={Dong, Xiaoyi and Bao, Jianmin and Chen, Dongdong and Zhang, Weiming and Yu, Nenghai and Yuan, Lu"
            " and Chen, Dong and Guo, Baining},\n"
            "  booktitle={CVPR},\n  year={2022}\n}"
        ),
    ),
    "crossformer": dict(
        title="CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention",
        arxiv="2108.00154",
        citation=(
            "@inproceedings{wang2021crossformer,\n"
            "  title={CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention},\n"
            "  author={Wang, Wenxiao and Yao, Lu and Chen, Long and Lin, Binbin and Cai, Deng and He, Xiaofei"
            " and Liu, Wei},\n"
            "  booktitle={International Conference on Learning Representations, {ICLR}},\n  year={2022}\n}"
        ),
    ),
    "crossformer_pp": dict(
        title="CrossFormer++: A Versatile Vision Transformer Hinging on Cross-scale Attention",
        arxiv="2303.06908",
        citation=(
            "@article{wang2023crossformerpp,\n"
            "  title={CrossFormer++: A Versatile Vision Transformer Hinging on Cross-scale Attention},\n"
            "  author={Wang, Wenxiao and others},\n"
            "  journal={IEEE Transactions on Pattern Analysis and Machine Intelligence},\n  year={2023}\n}"
        ),
    ),
    "halonet": dict(
        title="Scaling Local Self-Attention for Parameter Efficient Visual Backbones (HaloNet)",
        arxiv="2103.12731",
        note=(
            "No official code or weights exist. The paper row is the paper's table (parameters, image size, top-1; "
            "it prints no FLOPs) as transcribed by the keras_cv_attention_models HaloNet README; every other number "
            "here is vitzoo's own measurement of its reading of the paper, whose open choices are listed in "
            "`vitzoo/models/halonet.py`."
        ),
        citation=(
            "@inproceedings{vaswani2021scaling,\n"
            "  title={Scaling Local Self-Attention for Parameter Efficient Visual Backbones},\n"
            "  author={Vaswani, Ashish and Ramachandran, Prajit and Srinivas, Aravind and Parmar, Niki"
            " and Hechtman, Blake and Shlens, Jonathon},\n"
            "  booktitle={CVPR},\n  year={2021}\n}"
        ),
    ),
    "vitaev2_vsa": dict(
        title="VSA: Learning Varied-Size Window Attention in Vision Transformers (ViTAEv2*-VSA)",
        arxiv="2204.08446",
        note=(
            "The paper row's top-1 is the ViTAE-VSA README's; the README prints no cost, so its parameter count is "
            "our count of the official models.py and the GMACs above are vitzoo's (grid sampling not counted)."
        ),
        citation=_VSA_CITATION,
    ),
    "swin_vsa": dict(
        title="VSA: Learning Varied-Size Window Attention in Vision Transformers (Swin + VSA)",
        arxiv="2204.08446",
        note=(
            "The authors never released Swin+VSA code or weights: only the top-1 in the paper row is theirs (ViTAE-VSA "
            "README). This model is vitzoo's build of Swin with VSA in every block and no shifted windows; its "
            "parameters are Swin's plus the two window-regression convs per block, the overhead the paper states."
        ),
        citation=_VSA_CITATION,
    ),
    "mala": dict(
        title="Rectifying Magnitude Neglect in Linear Attention (MAViT with MALA)",
        arxiv="2507.00698",
        note=(
            "Only MAViT-S's paper numbers (27M, 4.6G, 84.7%) could be checked, in the ICCV abstract; the official "
            "model.py counts 4.9 GMACs for it, shown as the code count. The T/B/L paper rows hold counts of the "
            "official model.py. The rotary embedding follows the official order (after the feature map, outside "
            "the magnitude term), which MALA issue #5 questions; the released weights were trained with it."
        ),
        citation=(
            "@inproceedings{fan2025mala,\n"
            "  title={Rectifying Magnitude Neglect in Linear Attention},\n"
            "  author={Fan, Qihang and Huang, Huaibo and Ai, Yuang and He, Ran},\n"
            "  booktitle={ICCV},\n  year={2025}\n}"
        ),
    ),
    "agent": dict(
        title="Agent Attention: On the Integration of Softmax and Linear Attention",
        arxiv="2312.08874",
        note=(
            "Hosts follow the official classification code: DeiT (all blocks agent attention; Agent-DeiT-B only "
            "its first four, with 81 agents), PVT (every block, no spatial reduction), Swin (attn_type AAAB / "
            "AABB / AAMB2) and CSwin (AABB), 9-16-49-49 agents per stage. The agent blocks attend over the whole "
            "stage map; their position-bias tables are stored for the model's img_size and resized linearly to "
            "other maps, in the model and when a checkpoint of another resolution is loaded."
        ),
        citation=(
            "@inproceedings{han2024agent,\n"
            "  title={Agent Attention: On the Integration of Softmax and Linear Attention},\n"
            "  author={Han, Dongchen and Ye, Tianzhu and Han, Yizeng and Xia, Zhuofan and Pan, Siyuan and Wan, Pengfei"
            " and Song, Shiji and Huang, Gao},\n"
            "  booktitle={European Conference on Computer Vision (ECCV)},\n  year={2024}\n}"
        ),
    ),
    "inline": dict(
        title="Bridging the Divide: Reconsidering Softmax and Linear Attention (InLine attention)",
        arxiv="2412.06590",
        note=(
            "Hosts follow the official classification code: DeiT (InLine-DeiT's widths: T 192/6 heads, S 320/10 "
            "heads at 288 px, B 384/12 heads at 448 px), PVT (every block, twice PVT's heads), Swin (IIIS / IISS "
            "/ IIMS2) and CSwin (IISS). The README's parameter counts for InLine-Swin-T, InLine-PVT-L and InLine-"
            "CSwin-T/S/B are not what the official models build; the row 'official code, counted' gives what they"
            " build, which vitzoo matches exactly."
        ),
        citation=(
            "@inproceedings{han2024inline,\n"
            "  title={Bridging the Divide: Reconsidering Softmax and Linear Attention},\n"
            "  author={Han, Dongchen and Pu, Yifan and Xia, Zhuofan and Han, Yizeng and Pan, Xuran and Li, Xiu"
            " and Lu, Jiwen and Song, Shiji and Huang, Gao},\n"
            "  booktitle={NeurIPS},\n  year={2024}\n}"
        ),
    ),
    "flatten": dict(
        title="FLatten Transformer: Vision Transformer using Focused Linear Attention",
        arxiv="2308.00442",
        note=(
            "The README prints top-1 only: the paper row's cost is vitzoo's, and the 'official code, counted' row"
            " is an fvcore count of the official models (recorded here, not printed by the authors). Hosts: PVT-T"
            " (every block), Swin and CSwin (LLSS). The key positional encoding is stored for the model's "
            "img_size and resized bicubically to other maps. The focusing map runs in float32 under half "
            "precision: the cube of ordinary activations overflows float16, the reported cause of FLatten's "
            "float16 NaN."
        ),
        citation=(
            "@inproceedings{han2023flatten,\n"
            "  title={FLatten Transformer: Vision Transformer using Focused Linear Attention},\n"
            "  author={Han, Dongchen and Pan, Xuran and Han, Yizeng and Song, Shiji and Huang, Gao},\n"
            "  booktitle={ICCV},\n  year={2023}\n}"
        ),
    ),
}


def family_of(name: str) -> str:
    """The FAMILIES key of a model: the longest key its name (after ``vitzoo_``) starts with."""
    short = name.removeprefix("vitzoo_")
    return max((f for f in FAMILIES if short.startswith(f + "_")), key=len)


def _load(name: str) -> dict:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else {}


def _same_run(bench: list[dict], model: str | None, like: dict) -> dict | None:
    """The benchmark row of ``model`` with the same batch size as ``like``, if the run measured it."""
    return next((r for r in bench if r["model"] == model and r["batch_size"] == like["batch_size"]), None)


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def card_dict(name: str, bench: list[dict], parity: dict, by_size: list[dict] | None = None) -> dict:
    """Everything one card says, in one place."""
    with_tag = timm.list_pretrained(name)
    cfg = timm.models.get_pretrained_cfg(with_tag[0] if with_tag else name).to_dict()
    family = family_of(name)
    stats = model_stats(name, img_size=cfg["input_size"][-1])
    rows = [dict(r, official=_same_run(bench, OFFICIAL_NAMES.get(name), r)) for r in bench if r["model"] == name]
    return dict(
        name=name,
        family=family,
        tags=[t.split(".", 1)[1] for t in with_tag],
        license=cfg.get("license", "unknown"),
        origin_url=cfg.get("origin_url"),
        weights=weight_sources(cfg),
        img_size=cfg["input_size"][-1],
        stats=stats,
        paper=PAPER_TABLE.get(name),
        bench=rows,
        by_size=[
            dict(
                r,
                twin=next(
                    (t for t in by_size if t["model"] == COUNTERPARTS.get(name) and t["img_size"] == r["img_size"]),
                    None,
                ),
            )
            for r in by_size or []
            if r["model"] == name
        ],
        parity=parity.get(name),
        **FAMILIES[family],
    )


def _out_indices(stats) -> str:
    """A ViT's default feature maps are its last four blocks; hierarchical models list their four stages."""
    return "" if len(stats.reductions) > 4 else ", out_indices=(0, 1, 2, 3)"


def _weights_line(card: dict) -> str:
    return "; ".join(source.describe() for source in card["weights"]) or "none published"


def render(card: dict) -> str:
    s, paper = card["stats"], card["paper"]
    name = card["name"]
    tag = f"{name}.{card['tags'][0]}" if card["tags"] else name
    lines = [
        "---",
        "library_name: timm",
        f"license: {card['license']}",
        "tags:\n- image-classification\n- timm\n- vitzoo",
        "datasets:\n- imagenet-1k",
        "---",
        f"# Model card for {name}",
        "",
        f"{card['title']} (arXiv:{card['arxiv']}), ported to timm by vitzoo.",
        "",
        "## Model Details",
        f"- **Params (M):** {s.params_m:.2f}",
        f"- **GMACs:** {s.gmacs:.2f}",
        f"- **Activations (M):** {s.activations_m:.2f}",
        f"- **Image size:** {card['img_size']} x {card['img_size']} (any size >= {min(s.reductions[-1], 32)} runs)",
        f"- **Feature map channels / strides:** {list(s.channels)} / {list(s.reductions)}",
        f"- **Papers:** https://arxiv.org/abs/{card['arxiv']}",
        f"- **Original:** {card['origin_url'] or 'no official code released'}",
        f"- **Weights:** {_weights_line(card)}",
        "",
        "## Usage",
        "### Image classification",
        "```python",
        "import timm, torch, vitzoo",
        f"model = timm.create_model('{tag}', pretrained={bool(card['tags'])}).eval()",
        "cfg = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**cfg)",
        "logits = model(transform(img).unsqueeze(0))  # img: a PIL image",
        "```",
        "### Feature maps",
        "```python",
        f"model = timm.create_model('{name}', features_only=True{_out_indices(s)})",
        "for f in model(torch.randn(1, 3, 224, 224)):",
        "    print(f.shape)",
        "```",
        "### Image embeddings",
        "```python",
        f"model = timm.create_model('{name}', num_classes=0)",
        f"emb = model(torch.randn(1, 3, 224, 224))  # (1, {s.channels[-1]})",
        "```",
        "",
        "## Comparison",
        "| | params (M) | GMACs | ImageNet-1k top-1 |",
        "|---|---|---|---|",
        f"| vitzoo (measured) | {s.params_m:.2f} | {s.gmacs:.2f} | not measured |",
    ]
    if paper:
        gmacs = paper.gmacs or "not printed"
        params = paper.params_m or "not printed"
        lines.append(f"| paper ({paper.source}) | {params} | {gmacs} | {paper.top1 or '-'} |")
        if paper.code_gmacs or paper.code_params:
            lines.append(f"| official code, counted | {paper.code_params or '-'} | {paper.code_gmacs or '-'} | - |")
    if card.get("note"):
        lines += ["", card["note"]]
    if card["parity"]:
        p = card["parity"]
        lines += [
            "",
            f"Outputs checked against the official code ({p['official']}): max abs logit difference "
            f"{p['max_abs_diff']:.1e} (logits up to {p['max_abs_logit']:.2f}) with the same random weights, "
            f"{p['input']}, fp32, CPU.",
        ]
    if card["bench"]:
        lines += ["", "CPU throughput (fp32, eager, this repo's benchmark machine; see benchmarks/results):", ""]
        lines += [
            "| batch | inference img/s | training img/s | inference / training vs official (same run) |",
            "|---|---|---|---|",
        ]
        for r in card["bench"]:
            train, off = r.get("train_img_s"), r["official"] or {}
            vs = f"{_ratio(r['infer_img_s'], off.get('infer_img_s'))} / {_ratio(train, off.get('train_img_s'))}"
            lines.append(f"| {r['batch_size']} | {r['infer_img_s']:.1f} | {f'{train:.1f}' if train else '-'} | {vs} |")
    if card["by_size"]:
        title = "CPU inference at growing input sizes (batch 1, fp32, eager; benchmarks/results/cpu_resolution.md):"
        lines += ["", title, ""]
        twin = COUNTERPARTS.get(card["name"])
        if twin:
            lines += [
                f"| input | GMACs | latency ms (p50) | softmax counterpart `{twin}` (ms) | speed-up |",
                "|---|---|---|---|---|",
            ]
        else:
            lines += ["| input | GMACs | latency ms (p50) |", "|---|---|---|"]
        for r in card["by_size"]:
            row = f"| {r['img_size']} x {r['img_size']} | {r['gmacs']:.1f} | {r['infer_ms_p50']:.0f} |"
            if twin:
                t = r["twin"]
                row += f" {t['infer_ms_p50']:.0f} | {t['infer_ms_p50'] / r['infer_ms_p50']:.2f}x |" if t else " - | - |"
            lines.append(row)
    lines += ["", "## Citation", "```bibtex", card["citation"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed card is stale")
    args = parser.parse_args(argv)
    bench = _load("cpu_models.json").get("results", [])
    parity = _load("official_parity.json").get("results", {})
    by_size = _load("cpu_resolution.json").get("results", [])
    stale = []
    CARDS.mkdir(exist_ok=True)
    for name in timm.list_models("vitzoo_*"):
        text = render(card_dict(name, bench, parity, by_size))
        path = CARDS / f"{name}.md"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale model cards: {stale}; run python tools/gen_model_cards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
