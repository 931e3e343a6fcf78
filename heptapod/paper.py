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
