"""Report stage: one table, plot and statement per ablation family, and a README to read.

Each family (paper Table 1, 2, 4 and Fig. 6, 7, 8; ``heptapod.config.FAMILIES``) is written on
its own (``<family>.{md,csv,json,png}``), so a single paper table can be reproduced and published
alone; the README gathers them. The modules, one job each:

- ``runs``: what a run's files say (one row per run) and the mean ± SD over seeds;
- ``statements``: the noise of each metric and the verdict of each family by the decision rule;
- ``tables`` and ``plots``: how the rows are shown;
- ``family``, ``readme``, ``publish``: the files the stages write.

Every input is a file the caller names (``RunFiles``); nothing here derives a path. The paper's
numbers come from ``heptapod.paper``, always labelled as such.
"""
