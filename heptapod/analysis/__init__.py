"""Analyses beyond the paper, on the runs the ablations trained: how far attention reaches
(``attention``), how alike the states of different positions are (``similarity``, the paper's
Fig. 3) and how linearly separable the backbone's representation is (``probe``)."""
