"""One record per paper vitzoo ports: title, arXiv id, licence, official code and the commit it was checked against,
citation and what the docs must say about its numbers.

The model files' pretrained cfgs take their ``paper_name`` / ``paper_ids`` / ``license`` / ``origin_url`` from
here (:meth:`Paper.cfg_fields`), and the model cards, README table, ``vitzoo info`` and ``vitzoo list`` read the
record through :func:`paper_of`: nothing about a paper is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PAPERS", "Paper", "family_of", "paper_of"]


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str
    license: str  # Hugging Face Hub licence id of the official code ("unknown": the repository states none)
    repo: str | None  # GitHub "owner/name" of the official code; None: the authors released none
    commit: str | None  # the official commit vitzoo's outputs were checked against (benchmarks/results)
    citation: str  # BibTeX
    note: str = ""  # what a reader of the model card needs to know about this family's numbers or build

    @property
    def paper_id(self) -> str:
        return f"arXiv:{self.arxiv}"

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"

    @property
    def origin_url(self) -> str | None:
        return f"https://github.com/{self.repo}" if self.repo else None

    def cfg_fields(self) -> dict:
        """The timm pretrained-cfg fields this record fills (timm's Hub cards read the same fields)."""
        fields = dict(paper_name=self.title, paper_ids=self.paper_id, license=self.license)
        return fields if self.origin_url is None else dict(fields, origin_url=self.origin_url)


_VSA_CITATION = (
    "@inproceedings{zhang2022vsa,\n"
    "  title={VSA: Learning Varied-Size Window Attention in Vision Transformers},\n"
    "  author={Zhang, Qiming and Xu, Yufei and Zhang, Jing and Tao, Dacheng},\n"
    "  booktitle={European Conference on Computer Vision (ECCV)},\n"
    "  year={2022}\n"
    "}"
)

# keyed by family: the part of a model name after ``vitzoo_`` and before the variant
PAPERS: dict[str, Paper] = {
    "van": Paper(
        title="Visual Attention Network",
        arxiv="2202.09741",
        license="apache-2.0",
        repo="Visual-Attention-Network/VAN-Classification",
        commit="e19779b",
        citation=(
            "@article{guo2023visual,\n"
            "  title={Visual Attention Network},\n"
            "  author={Guo, Meng-Hao and Lu, Cheng-Ze and Liu, Zheng-Ning and Cheng, Ming-Ming and Hu, Shi-Min},\n"
            "  journal={Computational Visual Media},\n"
            "  year={2023}\n"
            "}"
        ),
    ),
    "biformer": Paper(
        title="BiFormer: Vision Transformer with Bi-Level Routing Attention",
        arxiv="2303.08810",
        license="mit",
        repo="rayleizhu/BiFormer",
        commit="1697bbb",
        citation=(
            "@inproceedings{zhu2023biformer,\n"
            "  title={BiFormer: Vision Transformer with Bi-Level Routing Attention},\n"
            "  author={Zhu, Lei and Wang, Xinjiang and Ke, Zhanghan and Zhang, Wayne and Lau, Rynson},\n"
            "  booktitle={CVPR},\n"
            "  year={2023}\n"
            "}"
        ),
    ),
    "cswin": Paper(
        title="CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows",
        arxiv="2107.00652",
        license="mit",
        repo="microsoft/CSWin-Transformer",
        commit="f111ae2",
        citation=(
            "@inproceedings{dong2022cswin,\n"
            "  title={CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows},\n"
            "  author={Dong, Xiaoyi and Bao, Jianmin and Chen, Dongdong and Zhang, Weiming and Yu, Nenghai"
            " and Yuan, Lu and Chen, Dong and Guo, Baining},\n"
            "  booktitle={CVPR},\n"
            "  year={2022}\n"
            "}"
        ),
    ),
    "crossformer": Paper(
        title="CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention",
        arxiv="2108.00154",
        license="mit",
        repo="cheerss/CrossFormer",
        commit="4fbf750",
        citation=(
            "@inproceedings{wang2021crossformer,\n"
            "  title={CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention},\n"
            "  author={Wang, Wenxiao and Yao, Lu and Chen, Long and Lin, Binbin and Cai, Deng"
            " and He, Xiaofei and Liu, Wei},\n"
            "  booktitle={International Conference on Learning Representations, {ICLR}},\n"
            "  year={2022}\n"
            "}"
        ),
    ),
    "crossformer_pp": Paper(
        title="CrossFormer++: A Versatile Vision Transformer Hinging on Cross-scale Attention",
        arxiv="2303.06908",
        license="mit",
        repo="cheerss/CrossFormer",
        commit="7952010",
        citation=(
            "@article{wang2023crossformerpp,\n"
            "  title={CrossFormer++: A Versatile Vision Transformer Hinging on Cross-scale Attention},\n"
            "  author={Wang, Wenxiao and others},\n"
            "  journal={IEEE Transactions on Pattern Analysis and Machine Intelligence},\n"
            "  year={2023}\n"
            "}"
        ),
    ),
    "halonet": Paper(
        title="Scaling Local Self-Attention for Parameter Efficient Visual Backbones (HaloNet)",
        arxiv="2103.12731",
        license="apache-2.0",
        repo=None,
        commit=None,
        citation=(
            "@inproceedings{vaswani2021scaling,\n"
            "  title={Scaling Local Self-Attention for Parameter Efficient Visual Backbones},\n"
            "  author={Vaswani, Ashish and Ramachandran, Prajit and Srinivas, Aravind and Parmar, Niki"
            " and Hechtman, Blake and Shlens, Jonathon},\n"
            "  booktitle={CVPR},\n"
            "  year={2021}\n"
            "}"
        ),
        note=(
            "No official code or weights exist. The paper row is the paper's table (parameters, image size, top-1; it"
            " prints no FLOPs) as transcribed by the keras_cv_attention_models HaloNet README; every other number "
            "here is vitzoo's own measurement of its reading of the paper, whose open choices are listed in "
            "`vitzoo/models/halonet.py`."
        ),
    ),
    "vitaev2_vsa": Paper(
        title="VSA: Learning Varied-Size Window Attention in Vision Transformers (ViTAEv2*-VSA)",
        arxiv="2204.08446",
        license="mit",
        repo="ViTAE-Transformer/ViTAE-VSA",
        commit="75dc986",
        citation=_VSA_CITATION,
        note=(
            "The paper row's top-1 is the ViTAE-VSA README's; the README prints no cost, so its parameter count is "
            "our count of the official models.py and the GMACs above are vitzoo's (grid sampling not counted)."
        ),
    ),
    "swin_vsa": Paper(
        title="VSA: Learning Varied-Size Window Attention in Vision Transformers (Swin + VSA)",
        arxiv="2204.08446",
        license="mit",
        repo=None,
        commit=None,
        citation=_VSA_CITATION,
        note=(
            "The authors never released Swin+VSA code or weights: only the top-1 in the paper row is theirs "
            "(ViTAE-VSA README). This model is vitzoo's build of Swin with VSA in every block and no shifted windows;"
            " its parameters are Swin's plus the two window-regression convs per block, the overhead the paper "
            "states."
        ),
    ),
    "mala": Paper(
        title="Rectifying Magnitude Neglect in Linear Attention (MAViT with MALA)",
        arxiv="2507.00698",
        license="unknown",
        repo="qhfan/MALA",
        commit="7114e63",
        citation=(
            "@inproceedings{fan2025mala,\n"
            "  title={Rectifying Magnitude Neglect in Linear Attention},\n"
            "  author={Fan, Qihang and Huang, Huaibo and Ai, Yuang and He, Ran},\n"
            "  booktitle={ICCV},\n"
            "  year={2025}\n"
            "}"
        ),
        note=(
            "Only MAViT-S's paper numbers (27M, 4.6G, 84.7%) could be checked, in the ICCV abstract; the official "
            "model.py counts 4.9 GMACs for it, shown as the code count. The T/B/L paper rows hold counts of the "
            "official model.py. The rotary embedding follows the official order (after the feature map, outside the "
            "magnitude term), which MALA issue #5 questions; the released weights were trained with it."
        ),
    ),
    "agent": Paper(
        title="Agent Attention: On the Integration of Softmax and Linear Attention",
        arxiv="2312.08874",
        license="mit",
        repo="LeapLabTHU/Agent-Attention",
        commit="207ce3e",
        citation=(
            "@inproceedings{han2024agent,\n"
            "  title={Agent Attention: On the Integration of Softmax and Linear Attention},\n"
            "  author={Han, Dongchen and Ye, Tianzhu and Han, Yizeng and Xia, Zhuofan and Pan, Siyuan"
            " and Wan, Pengfei and Song, Shiji and Huang, Gao},\n"
            "  booktitle={European Conference on Computer Vision (ECCV)},\n"
            "  year={2024}\n"
            "}"
        ),
        note=(
            "Hosts follow the official classification code: DeiT (all blocks agent attention; Agent-DeiT-B only its "
            "first four, with 81 agents), PVT (every block, no spatial reduction), Swin (attn_type AAAB / AABB / "
            "AAMB2) and CSwin (AABB), 9-16-49-49 agents per stage. The agent blocks attend over the whole stage map; "
            "their position-bias tables are stored for the model's img_size and resized linearly to other maps, in "
            "the model and when a checkpoint of another resolution is loaded."
        ),
    ),
    "inline": Paper(
        title="Bridging the Divide: Reconsidering Softmax and Linear Attention (InLine attention)",
        arxiv="2412.06590",
        license="mit",
        repo="LeapLabTHU/InLine",
        commit="e463a6f",
        citation=(
            "@inproceedings{han2024inline,\n"
            "  title={Bridging the Divide: Reconsidering Softmax and Linear Attention},\n"
            "  author={Han, Dongchen and Pu, Yifan and Xia, Zhuofan and Han, Yizeng and Pan, Xuran"
            " and Li, Xiu and Lu, Jiwen and Song, Shiji and Huang, Gao},\n"
            "  booktitle={NeurIPS},\n"
            "  year={2024}\n"
            "}"
        ),
        note=(
            "Hosts follow the official classification code: DeiT (InLine-DeiT's widths: T 192/6 heads, S 320/10 heads"
            " at 288 px, B 384/12 heads at 448 px), PVT (every block, twice PVT's heads), Swin (IIIS / IISS / IIMS2) "
            "and CSwin (IISS). The README's parameter counts for InLine-Swin-T, InLine-PVT-L and InLine-CSwin-T/S/B "
            "are not what the official models build; the row 'official code, counted' gives what they build, which "
            "vitzoo matches exactly."
        ),
    ),
    "flatten": Paper(
        title="FLatten Transformer: Vision Transformer using Focused Linear Attention",
        arxiv="2308.00442",
        license="mit",
        repo="LeapLabTHU/FLatten-Transformer",
        commit="abdb115",
        citation=(
            "@inproceedings{han2023flatten,\n"
            "  title={FLatten Transformer: Vision Transformer using Focused Linear Attention},\n"
            "  author={Han, Dongchen and Pan, Xuran and Han, Yizeng and Song, Shiji and Huang, Gao},\n"
            "  booktitle={ICCV},\n"
            "  year={2023}\n"
            "}"
        ),
        note=(
            "The README prints top-1 only: the paper row's cost is vitzoo's, and the 'official code, counted' row is "
            "an fvcore count of the official models (recorded here, not printed by the authors). Hosts: PVT-T (every "
            "block), Swin and CSwin (LLSS). The key positional encoding is stored for the model's img_size and "
            "resized bicubically to other maps. The focusing map runs in float32 under half precision: the cube of "
            "ordinary activations overflows float16, the reported cause of FLatten's float16 NaN."
        ),
    ),
}


def family_of(name: str) -> str:
    """The :data:`PAPERS` key of a model name (``vitzoo_agent_swin_t`` -> ``agent``): its longest matching prefix."""
    short = name.removeprefix("vitzoo_").partition(".")[0]
    matches = [family for family in PAPERS if short.startswith(family + "_")]
    if not matches:
        raise KeyError(f"{name!r} is not a vitzoo model name (vitzoo_<family>_<variant>; families: {sorted(PAPERS)})")
    return max(matches, key=len)


def paper_of(name: str) -> Paper:
    """The paper record of a registered model (``arch`` or ``arch.tag``)."""
    return PAPERS[family_of(name)]
