"""select_model (genovae.rounds): the rounds table says which decided change was never applied."""

import json

import pandas as pd

from genovae.rounds import latent_knn, select_model


def decision(round_, value, passed, change):
    return {"round": round_, "metric": "val_mse_ratio_pca", "threshold": 1.1, "value": value, "passed": passed,
            "seed": round_, "diagnosis": "overfitting", "diagnosis_reason": "gap", "change": change,
            **latent_knn({"condition": "disease", "labels": [
                {"label": "sex", "representation": "vae", "n": 60, "knn_accuracy": 0.5},
                {"label": "disease", "representation": "vae", "n": 60, "knn_accuracy": 0.9 - 0.1 * round_},
                {"label": "disease", "representation": "pca", "n": 60, "knn_accuracy": 0.75},
            ]})}


def test_the_last_rounds_change_is_marked_as_not_run(tmp_path):
    changes = ["overfitting: dropout 0.1 -> 0.2", "overfitting: dropout 0.2 -> 0.3"]
    paths = {"decisions": [], "models": [], "infos": []}
    for r, (value, passed) in enumerate([(1.2, False), (1.05, True)], start=1):
        d = tmp_path / str(r)
        d.mkdir()
        (d / "decision.json").write_text(json.dumps(decision(r, value, passed, changes[r - 1])))
        (d / "model.pt").write_bytes(b"weights of round %d" % r)
        (d / "train_info.json").write_text(json.dumps({"device": "cpu"}))
        paths["decisions"].append(str(d / "decision.json"))
        paths["models"].append(str(d / "model.pt"))
        paths["infos"].append(str(d / "train_info.json"))
    sel = select_model(**paths, out_model=str(tmp_path / "model.pt"), out_selection=str(tmp_path / "sel.json"),
                       out_rounds=str(tmp_path / "rounds.tsv"), metric="val_mse_ratio_pca", threshold=1.1,
                       max_rounds=3)
    assert sel["selected_round"] == 2 and (tmp_path / "model.pt").read_bytes() == b"weights of round 2"
    # round 1's change made round 2; round 2 passed, so its change was decided and never applied
    assert sel["rounds"][0]["change"] == changes[0]
    assert sel["rounds"][1]["change"] == changes[1] + " (not run: no further round)"
    table = pd.read_csv(tmp_path / "rounds.tsv", sep="\t")
    assert table["change"].tolist() == [r["change"] for r in sel["rounds"]]
    # each round's latent structure for the condition (never used to select), beside PCA's
    assert table["knn_vae"].tolist() == [0.8, 0.7] and table["knn_pca"].tolist() == [0.75, 0.75]
    assert json.loads((tmp_path / "sel.json").read_text())["rounds"] == sel["rounds"]


def test_latent_knn_reads_the_condition_and_falls_back_to_the_first_label():
    rows = [{"label": "sex", "representation": "vae", "n": 40, "knn_accuracy": 0.6},
            {"label": "sex", "representation": "pca", "n": 40, "knn_accuracy": 0.7},
            {"label": "disease", "representation": "vae", "n": 40, "knn_accuracy": 0.9}]
    assert latent_knn({"condition": "disease", "labels": rows})["latent_knn"] == {
        "label": "disease", "vae": 0.9, "pca": None, "n": 40}
    # metrics.json of an older evaluate (no condition key): the first label is the condition (evaluate's order)
    assert latent_knn({"labels": rows})["latent_knn"]["label"] == "sex"
    assert latent_knn({}) == {} and latent_knn({"condition": "x", "labels": rows}) == {}
