#!/usr/bin/env bash
# The reference run: the paper's comparisons on the embedded data set, trained until they stop
# moving (preset `reference`, hours on 2 CPU cores). Table 1 and Fig. 8 have priority, so an
# interrupted run has the most important ones first; rerunning this script resumes where it
# stopped (finished outputs are cached, training continues from last.pt).
#   nohup bash scripts/reference_run.sh > reference.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
# A run's outputs are redone when their inputs or parameters change, not when only a rule's
# command line does: code edits of the workflow must not throw away hours of finished training
# (training itself refuses a checkpoint written with other parameters).
SNAKEMAKE=(.venv/bin/snakemake --rerun-triggers mtime params input --cores all)  # --cores last: a target follows
CONFIG=(--config preset=reference)  # last: --config takes every word after it
# a killed run leaves Snakemake's lock behind; nothing else may be running on this folder
"${SNAKEMAKE[@]}" --unlock "${CONFIG[@]}" >/dev/null 2>&1 || true
echo "reference run: started ($(date -u +%FT%TZ))"
# One Snakemake run for every family, so that no core idles while another family's last run
# trains; Table 1 and Fig. 8 (the comparisons that matter most) go first wherever they can.
"${SNAKEMAKE[@]}" table1 fig8 table4 fig7 fig6 ablations --prioritize table1 fig8 "${CONFIG[@]}"
# The doubling test: Table 1's random-order runs again at twice the steps; has the ranking settled?
# and at 4x (~2.5 h more) and 8x (~5.5 h more): each compared with the link before it, all judged
# by the reference's noise
for link in reference-2x reference-4x reference-8x; do
    "${SNAKEMAKE[@]}" convergence --config preset=$link
done
echo "reference run: done ($(date -u +%FT%TZ)); report in results/report/reference/, doubling tests in results/report/reference-{2x,4x,8x}/convergence.md"
