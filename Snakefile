# genovae: a VAE workflow for gene-expression cohorts.
#
#   collect -> preprocess -> train (round r) -> evaluate -> decide (checkpoint)
#     -> [retrain until the threshold is met or max_rounds] -> select_model
#     -> apply_model -> plots -> summarize -> report, export_h5ad (latent.h5ad)
#   apply_new (on demand): a new cohort through the saved transform and model
#
# Read the stages in workflow/rules/; the logic lives in workflow/lib/genovae/.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/privacy.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/apply.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/apply_new.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    print(
        f"\ngenovae: run '{config['run']}' finished; results in {R}/ (start with {R}/summary.json).\n"
        f"HTML report: snakemake --report {R}/report.html\n"
    )
