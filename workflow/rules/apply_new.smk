# Apply a finished run's saved model to a new cohort, without retraining or
# re-deciding (the model and transform are params, not inputs):
#   snakemake apply_new --cores 1 --configfile results/{run}/config.yaml \
#       --config new_data='{expression: path/to/new.tsv, name: batch2}'


rule apply_new:
    input:
        unpack(new_data_inputs),
    output:
        **({"predictions": f"{R}/new/{NEW}/predictions.tsv"} if S.analysis.predict else {}),
        latent=f"{R}/new/{NEW}/latent.tsv",
        errors=f"{R}/new/{NEW}/reconstruction_error.tsv",
        manifest=f"{R}/new/{NEW}/manifest.json",
    log:
        f"{R}/logs/apply_new/{NEW}.log",
    benchmark:
        f"{R}/benchmarks/apply_new/{NEW}.tsv"
    conda:
        "../../envs/model.yaml"
    threads: THREADS
    resources:
        mem_mb=job_mem_mb("apply_new"),
        runtime=job_runtime("apply_new"),
    params:
        new_data=new_data_params,
    script:
        "../scripts/apply_new.py"
