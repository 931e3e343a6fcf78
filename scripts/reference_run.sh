#!/usr/bin/env bash
# The reference run: the paper's comparisons on the embedded data set, trained until they stop
# moving (preset `reference`, hours on 2 CPU cores), in the order of what they decide, so that an
# interrupted run has the most important ones first; rerunning this script resumes where it
# stopped (finished outputs are cached, training continues from last.pt).
#   nohup bash scripts/reference_run.sh > reference.log 2>&1 &
#   .venv/bin/python -m heptapod status --preset reference    # where it stands
set -euo pipefail
cd "$(dirname "$0")/.."
# A run's outputs are redone when their inputs or parameters change, not when only a rule's
# command line does: code edits of the workflow must not throw away hours of finished training
# (training itself refuses a checkpoint written with other parameters).
SNAKEMAKE=(.venv/bin/snakemake --rerun-triggers mtime params input --cores all)  # --cores last: a target follows
CONFIG=(--config preset=reference)  # last: --config takes every word after it
# a killed run leaves Snakemake's lock behind; nothing else may be running on this folder
"${SNAKEMAKE[@]}" --unlock "${CONFIG[@]}" >/dev/null 2>&1 || true
# The doubling chain's links: the presets whose workflow.longer_of chain leads to `reference`,
# shortest first.
chain=$(.venv/bin/python -c "
from heptapod.config import load_params, longer_links
print(' '.join(longer_links(load_params(), 'reference')))")
# Every scored run is kept as a record (results/records/<preset>/<run>/: its scores, log and
# summary, not its checkpoint); committed, the pages and the chain read it on any machine instead
# of retraining the run (workflow.records). Runs scored by an interrupted call are recorded at the
# next start.
record() {
    for preset in reference $chain; do
        .venv/bin/python -m heptapod record --preset "$preset" 2>&1 | grep -v "already recorded" || true
    done
}
# A run longer than a session (the chain's links take hours) is parked too: its training state is
# copied into results/parked/<preset>/ (heptapod.parking), which, committed, lets the next session
# resume it on any machine; recording the finished run removes it.
park() {
    for preset in $chain; do
        .venv/bin/python -m heptapod park --preset "$preset" 2>&1 | grep -v "no part-way run" || true
    done
}
echo "reference run: started ($(date -u +%FT%TZ))"
record
# Record and park while the workflow runs too, so that a run scored or trained part-way in a session
# cut short is kept even when the next session is on another machine (both are written whole or
# not at all).
( while sleep 600; do record; park; done ) &
trap 'kill $! 2>/dev/null || true' EXIT
# 1. Table 1 (3 seeds) and Fig. 8 (n = 1, 2, 4, 8; 2 seeds): order and supervision density, the
#    paper's central claims.
"${SNAKEMAKE[@]}" table1 fig8 --prioritize table1 "${CONFIG[@]}"
record
# 2. The doubling chain: Table 1's random-order runs at 2x, 4x and 8x the steps, each link compared
#    with the one before and judged by the reference's noise: has the ranking stopped moving? It
#    decides Table 1, the first of the priorities, so its links come before the other families.
#    Each link's page also sets its held-out NLL by generation step (analysis/steps) beside the
#    shorter budgets' (which part of the grid the extra training improves), and Fig. 8's denser
#    supervision beside the chain at equal training compute. Both read the runs' records where they
#    match, so a link's runs are trained once, across sessions and machines (parked), and recorded.
for preset in $chain; do
    "${SNAKEMAKE[@]}" convergence --config preset="$preset"
    record
done
# 3. The other families (Table 4, Fig. 7, Fig. 6) and the whole report: what records can stand in
#    for, so that they build up over sessions on any machine.
"${SNAKEMAKE[@]}" table4 fig7 fig6 ablations "${CONFIG[@]}"
record
# 4. What the models do inside (analysis/: its similarity maps set Fig. 6's KL run beside Table
#    1's), which reads checkpoints: on a machine without them, the runs it reads are trained again.
"${SNAKEMAKE[@]}" analysis "${CONFIG[@]}"
echo "reference run: done ($(date -u +%FT%TZ)); report in results/report/reference/, doubling tests in" \
     "results/report/{${chain// /,}}/convergence.md"
