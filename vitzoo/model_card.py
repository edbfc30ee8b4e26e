"""A registered model's Hugging Face model card, built from the code: its pretrained cfg, its paper record
(:mod:`vitzoo.models._papers`), vitzoo's measurements (:mod:`vitzoo.stats`), the paper table and, where given,
benchmark and parity results.

``tools/gen_model_cards.py`` writes ``model_cards/`` with the committed benchmark results; ``vitzoo convert`` writes
the card of a converted Hub folder with the parity figure of that conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import timm
from huggingface_hub import ModelCard, ModelCardData

from .hub import weight_sources
from .models._papers import Paper, paper_of
from .paper_table import PAPER_TABLE
from .stats import model_stats

__all__ = ["BenchResults", "card_dict", "render_card"]


@dataclass(frozen=True)
class BenchResults:
    """Benchmark rows to quote, and which model each row is compared with (the benchmark run's own pairing)."""

    rows: list[dict] = field(default_factory=list)  # cpu_models.json "results"
    official: dict[str, str] = field(default_factory=dict)  # vitzoo name -> official model's name in that run
    by_size: list[dict] = field(default_factory=list)  # cpu_resolution.json "results"
    counterparts: dict[str, str] = field(default_factory=dict)  # linear-cost model -> its softmax counterpart


def _same_run(rows: list[dict], model: str | None, like: dict) -> dict | None:
    """The benchmark row of ``model`` with the same batch size as ``like``, if the run measured it."""
    return next((r for r in rows if r["model"] == model and r["batch_size"] == like["batch_size"]), None)


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def card_dict(
    name: str, bench: BenchResults | None = None, parity: dict | None = None, conversion: dict | None = None
) -> dict:
    """Everything one card says, in one place.

    ``parity``: the check against the official code (``{official, max_abs_diff, max_abs_diff_fp64, max_abs_logit,
    input}``; ``max_abs_diff_fp64`` may be absent).
    ``conversion``: for the card of a converted Hub repo (``vitzoo convert``), ``{checkpoint, sha256, repo_id,
    max_abs_diff, max_abs_logit, input}``.
    """
    bench = bench or BenchResults()
    with_tag = timm.list_pretrained(name)
    cfg = timm.models.get_pretrained_cfg(with_tag[0] if with_tag else name).to_dict()
    img_size = cfg["input_size"][-1]
    twin = bench.counterparts.get(name)
    by_size = []
    for r in bench.by_size:
        if r["model"] == name:
            match = (t for t in bench.by_size if t["model"] == twin and t["img_size"] == r["img_size"])
            by_size.append(dict(r, twin=next(match, None)))
    return dict(
        name=name,
        paper=paper_of(name),
        tags=[t.split(".", 1)[1] for t in with_tag],
        license=cfg.get("license") or "unknown",
        weights=weight_sources(cfg),
        hf_hub_id=cfg.get("hf_hub_id"),
        img_size=img_size,
        stats=model_stats(name, img_size=img_size),
        printed=PAPER_TABLE.get(name),
        bench=[
            dict(r, official=_same_run(bench.rows, bench.official.get(name), r))
            for r in bench.rows
            if r["model"] == name
        ],
        twin=twin,
        by_size=by_size,
        parity=parity,
        conversion=conversion,
    )


def _out_indices(stats) -> str:
    """A ViT's default feature maps are its last four blocks; hierarchical models list their four stages."""
    return "" if len(stats.reductions) > 4 else ", out_indices=(0, 1, 2, 3)"


def _weights_line(card: dict) -> str:
    if card["conversion"]:
        c = card["conversion"]
        return f"this repository: `{c['checkpoint']}` (sha256 {c['sha256'][:16]}...) converted by `vitzoo convert`"
    described = "; ".join(source.describe() for source in card["weights"])
    if card["hf_hub_id"]:
        return described
    convert = f"convert an official checkpoint with `vitzoo convert CHECKPOINT --model {card['name']} --out DIR`"
    return f"{described}; {convert}" if described else "none published"


def _original(paper: Paper) -> str:
    if paper.origin_url is None:
        return "no official code released"
    return f"{paper.origin_url} (outputs checked against commit {paper.commit})"


def _front_matter(card: dict) -> ModelCardData:
    return ModelCardData(
        library_name="timm",
        license=card["license"],
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "vitzoo"],
        datasets=["imagenet-1k"],
    )


def _comparison(card: dict) -> list[str]:
    s, printed = card["stats"], card["printed"]
    lines = [
        f"## Comparison ({card['img_size']} x {card['img_size']})",
        "| | params (M) | GMACs | ImageNet-1k top-1 |",
        "|---|---|---|---|",
        f"| vitzoo (measured) | {s.params_m:.2f} | {s.gmacs:.2f} | not measured |",
    ]
    if printed:
        lines.append(
            f"| paper ({printed.source}) | {printed.params_m or 'not printed'} | {printed.gmacs or 'not printed'} "
            f"| {printed.top1 or '-'} |"
        )
        if printed.code_gmacs or printed.code_params:
            lines.append(f"| official code, counted | {printed.code_params or '-'} | {printed.code_gmacs or '-'} | - |")
    return lines


def _measurements(card: dict) -> list[str]:
    lines = []
    if card["paper"].note:
        lines += ["", card["paper"].note]
    if card["conversion"]:
        c = card["conversion"]
        lines += [
            "",
            f"Converted from the official checkpoint `{c['checkpoint']}` (sha256 {c['sha256']}). Loaded through "
            f"`hf-hub:{c['repo_id']}`, offline, this repository's weights give the logits of the model loaded from "
            f"that checkpoint: max abs difference {c['max_abs_diff']:.1e} (logits up to {c['max_abs_logit']:.2f}), "
            f"{c['input']} random normal input, fp32, CPU.",
        ]
    if card["parity"]:
        p = card["parity"]
        fp64 = f", {p['max_abs_diff_fp64']:.1e} in fp64" if "max_abs_diff_fp64" in p else ""
        lines += [
            "",
            f"Outputs checked against the official code ({p['official']}): max abs logit difference "
            f"{p['max_abs_diff']:.1e} in fp32{fp64} (logits up to {p['max_abs_logit']:.2f}) with the same random "
            f"weights, {p['input']}, CPU.",
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
        twin = card["twin"]
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
    return lines


def render_card(card: dict) -> str:
    """The card's text: YAML front matter (``huggingface_hub.ModelCardData``) and the markdown body."""
    s, paper, name = card["stats"], card["paper"], card["name"]
    tag = f"{name}.{card['tags'][0]}" if card["tags"] else name
    pretrained = bool(card["tags"])
    if card["conversion"]:
        tag, pretrained = f"hf-hub:{card['conversion']['repo_id']}", True
    body = [
        f"# Model card for {name}",
        "",
        f"{paper.title} (arXiv:{paper.arxiv}), ported to timm by vitzoo.",
        "",
        "## Model Details",
        f"- **Params (M):** {s.params_m:.2f}",
        f"- **GMACs:** {s.gmacs:.2f}",
        f"- **Activations (M):** {s.activations_m:.2f}",
        f"- **Image size:** {card['img_size']} x {card['img_size']} (any size >= {min(s.reductions[-1], 32)} runs)",
        f"- **Feature map channels / strides:** {list(s.channels)} / {list(s.reductions)}",
        f"- **Papers:** {paper.url}",
        f"- **Original:** {_original(paper)}",
        f"- **Weights:** {_weights_line(card)}",
        "",
        "## Usage",
        "### Image classification",
        "```python",
        "import timm, torch, vitzoo",
        f"model = timm.create_model('{tag}', pretrained={pretrained}).eval()",
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
        *_comparison(card),
        *_measurements(card),
        "",
        "## Citation",
        "```bibtex",
        paper.citation,
        "```",
        "",
    ]
    text = "\n".join(body)
    return str(ModelCard(f"---\n{_front_matter(card).to_yaml()}\n---\n{text}"))
