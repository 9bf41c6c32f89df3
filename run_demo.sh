#!/usr/bin/env bash
# Install genovae's requirements, run the demo workflow, and build its HTML report.
#   bash run_demo.sh            # uses all cores
#   bash run_demo.sh --cores 2  # extra arguments go to snakemake
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q -r requirements.txt
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--cores all)
snakemake "${args[@]}"
snakemake "${args[@]}" --report results/demo/report.html
echo
echo "genovae demo finished. Report: $(pwd)/results/demo/report.html"
echo "Summary: $(pwd)/results/demo/summary.json"
