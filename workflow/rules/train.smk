# The retrain loop: train round r -> evaluate -> decide (checkpoint). The
# select_model input function walks the rounds until one passes or
# retrain.max_rounds is reached (see loop_decisions in common.smk).
# In the merged job layout (resources.job_layout; small cohorts) the training job
# also evaluates its round: rule evaluate's inputs, output, log and params join
# rule train's, and rule evaluate is not defined.

EVALUATE_INPUTS = {
    "transform": f"{R}/preprocess/transform.json",
    "samples": f"{R}/data/samples.tsv",
}
EVALUATE_OUTPUTS = {"metrics": f"{R}/rounds/{{round}}/metrics.json"}
EVALUATE_LOGS = {"evaluate": f"{R}/logs/evaluate/round_{{round}}.log"}
EVALUATE_PARAMS = {"labels": S.label_params()}


rule train:
    input:
        **(EVALUATE_INPUTS if MERGED_JOBS else {}),
        features=f"{R}/preprocess/features.parquet",
        split=f"{R}/preprocess/split.tsv",
        matrix=f"{R}/data/matrix.parquet",
        previous=previous_model,
    output:
        **(EVALUATE_OUTPUTS if MERGED_JOBS else {}),
        model=f"{R}/rounds/{{round}}/model.pt",
        history=f"{R}/rounds/{{round}}/history.tsv",
        info=f"{R}/rounds/{{round}}/train_info.json",
    log:
        **(EVALUATE_LOGS if MERGED_JOBS else {}),
        train=f"{R}/logs/train/round_{{round}}.log",
    benchmark:
        f"{R}/benchmarks/train/round_{{round}}.tsv"
    wildcard_constraints:
        round=r"\d+",
    conda:
        "../../envs/model.yaml"
    threads: THREADS
    resources:
        mem_mb=job_mem_mb("train"),
        runtime=job_runtime("train"),
        gpu=train_gpus(),
        gpu_model=train_gpu_model(),
    params:
        **(EVALUATE_PARAMS if MERGED_JOBS else {}),
        model=model_params,
        train=train_params,
    script:
        "../scripts/train.py"


if not MERGED_JOBS:

    rule evaluate:
        input:
            **EVALUATE_INPUTS,
            model=f"{R}/rounds/{{round}}/model.pt",
            features=f"{R}/preprocess/features.parquet",
            split=f"{R}/preprocess/split.tsv",
            matrix=f"{R}/data/matrix.parquet",
        output:
            **EVALUATE_OUTPUTS,
        log:
            **EVALUATE_LOGS,
        benchmark:
            f"{R}/benchmarks/evaluate/round_{{round}}.tsv"
        wildcard_constraints:
            round=r"\d+",
        conda:
            "../../envs/model.yaml"
        resources:
            mem_mb=job_mem_mb("evaluate"),
            runtime=job_runtime("evaluate"),
        params:
            **EVALUATE_PARAMS,
        script:
            "../scripts/evaluate.py"


checkpoint decide:
    input:
        metrics=f"{R}/rounds/{{round}}/metrics.json",
        infos=dp_round_infos,  # with DP: privacy spent by rounds 1..r
        previous=search_history,  # strategy search: the study's earlier trials
    output:
        decision=f"{R}/rounds/{{round}}/decision.json",
    log:
        f"{R}/logs/decide/round_{{round}}.log",
    benchmark:
        f"{R}/benchmarks/decide/round_{{round}}.tsv"
    wildcard_constraints:
        round=r"\d+",
    conda:
        "../../envs/model.yaml"
    resources:
        mem_mb=job_mem_mb("decide"),
        runtime=job_runtime("decide"),
    params:
        **S.dp_decide_params(),
        **S.search_decide_params(),
        decide=S.decide_params(),
        strategy=S.retrain.strategy,
    script:
        "../scripts/decide.py"


rule select_model:
    input:
        decisions=loop_decisions,
        models=loop_models,
        infos=loop_infos,
    output:
        model=f"{R}/model/model.pt",
        selection=f"{R}/model/selection.json",
        rounds=report(
            f"{R}/model/rounds.tsv",
            caption="../report/rounds.rst",
            category="1. Training",
            labels={"table": "round decisions"},
        ),
    log:
        f"{R}/logs/select_model.log",
    benchmark:
        f"{R}/benchmarks/select_model.tsv"
    conda:
        "../../envs/model.yaml"
    resources:
        mem_mb=job_mem_mb("select_model"),
        runtime=job_runtime("select_model"),
    params:
        decide=S.decide_params(),
        max_rounds=S.retrain.max_rounds,
        stop_without_improvement=S.retrain.stop_without_improvement,
    script:
        "../scripts/select_model.py"
