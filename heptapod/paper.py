"""Numbers reported in the paper (arXiv 2510.06673), ImageNet 256x256, no CFG.

They stand beside the pipeline's own numbers in every report, always labelled as the paper's.
"""

SOURCE = "Heptapod paper (arXiv 2510.06673), ImageNet 256x256, no CFG, FID/IS with Inception"

TABLE1 = {  # L, 400 epochs
    "1d-raster": {"fid": 19.23, "is": 62.3},
    "1d-random": {"fid": 13.07, "is": 91.4},
    "2d-random": {"fid": 3.97, "is": 185.3},
}
TABLE2 = {
    "heptapod-b": {"params_m": 208, "fid": 5.85, "is": 149.6},
    "heptapod-l": {"params_m": 478, "fid": 3.62, "is": 190.8},
    "heptapod-h": {"params_m": 941, "fid": 2.70, "is": 229.8},
}
TABLE4 = {  # L, w256n1, backbone/head depth
    "31/1": {"fid": 14.74, "is": 98.15},
    "24/8": {"fid": 4.88, "is": 158.93},
    "16/16": {"fid": 3.62, "is": 190.8},
}

PEERS_TABLE2 = {  # other generators in the paper's Table 2, no CFG
    "MAR-B": {"fid": 3.48, "is": 192.4}, "MAR-L": {"fid": 2.60, "is": 221.4},
    "MAR-H": {"fid": 2.35, "is": 227.8}, "LlamaGen-3B": {"fid": 9.38, "is": 112.9},
    "MaskGIT": {"fid": 6.18, "is": None}, "VAR-d30": {"fid": 5.26, "is": None},
    "DiT-XL": {"fid": 9.62, "is": None},
}
CLAIMS = {  # the paper's qualitative findings for the curve figures
    "fig6": "VQ converges faster early; the VAE ends better (after ~150 epochs at ImageNet scale)",
    "fig7": "the larger window wins at equal w*n; the global head (w = N) is best",
    "fig8": "FID and IS improve with the supervision density n",
}


def table1_key(head: str, order: str) -> str | None:
    """The Table 1 row a run corresponds to, from what it is (head, order), not from its name."""
    return {("1d", "raster"): "1d-raster", ("1d", "random"): "1d-random",
            ("global", "random"): "2d-random"}.get((head, order))


def table4_key(backbone_depth: int, head_depth: int) -> str | None:
    """The Table 4 row of a depth split: 1:1 -> 16/16, 3:1 -> 24/8, a one-layer head -> 31/1."""
    if backbone_depth == head_depth:
        return "16/16"
    if backbone_depth == 3 * head_depth:
        return "24/8"
    return "31/1" if head_depth == 1 else None


def table2_key(preset: str) -> str | None:
    """The Table 2 row of a paper-scale preset ('imagenet-l' -> 'heptapod-l')."""
    name = "heptapod-" + preset.removeprefix("imagenet-")
    return name if preset.startswith("imagenet-") and name in TABLE2 else None
