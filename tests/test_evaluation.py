"""Several trial lists in one evaluation (lgl_helpers/core/evaluation.py) on the tiny toy corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_encoder import tiny_encoder

from lgl_helpers.core import evaluation
from lgl_helpers.core.embed import evaluate_trials
from lgl_helpers.core.encoder import checkpoint_threshold
from lgl_helpers.core.metrics import compute_eer, read_trial_scores
from lgl_helpers.core.models import save_encoder
from lgl_helpers.corpus.lists import Trial, read_train_list, read_trials, write_trials
from lgl_helpers.corpus.toy import speaker_traits, toy_eval_trials


@pytest.fixture(scope="module")
def lists(tiny_corpus):
    return evaluation.read_trial_lists(toy_eval_trials(tiny_corpus), tiny_corpus / "test")


def test_the_toy_corpus_has_an_o_and_a_harder_h_list(tiny_corpus, lists):
    assert set(lists) == {"toy-O", "toy-H"}
    hard = lists["toy-H"].trials
    # H: targets across sessions only, non-targets of one sex only (the corpus's ground truth)
    assert all(t.path_a.split("/")[1] != t.path_b.split("/")[1] for t in hard if t.label == 1)
    female = {f"id{10001 + k}": speaker_traits(0, "test", k).female for k in range(4)}
    assert all(female[t.path_a.split("/")[0]] == female[t.path_b.split("/")[0]] for t in hard if t.label == 0)
    assert {t.label for t in hard} == {0, 1}


def test_every_file_is_embedded_once_and_each_list_gets_scores_and_metrics(tiny_corpus, lists, tmp_path):
    model = tiny_encoder()
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    cohort = evaluation.plan_cohort("train", 20, 5, entries, tiny_corpus / "train", seed=0)
    test = lists["toy-O"]
    plan = evaluation.EvalPlan(test, test, lists, cohort)
    result = evaluation.final_evaluation(
        model, plan, tiny_corpus / "test", tmp_path, tmp_path / "test_scores.txt", device="cpu"
    )
    n_test_files = len({p for t in test.trials + lists["toy-H"].trials for p in (t.path_a, t.path_b)})
    assert result["eval"]["n_files_embedded"] == n_test_files + 20
    # the same EER as the single-list evaluation of the kit
    alone = evaluate_trials(model, test.trials, tiny_corpus / "test", device="cpu", show_progress=False)
    assert result["test"]["eer"] == pytest.approx(alone["eer"])
    for name in ("toy-O", "toy-H"):
        record = result["eval"]["lists"][name]
        assert set(record["metrics"]) == {"raw", "mean", "asnorm"}
        for variant, path in record["scores"].items():
            trials, scores = read_trial_scores(tmp_path.parent / path)  # relative to the run (the stage's parent)
            assert trials == lists[name].trials
            assert compute_eer(scores, [t.label for t in trials]) == pytest.approx(record["metrics"][variant]["eer"])
    # the O list is the test list: its raw scores are test_scores.txt, not a copy
    assert result["eval"]["lists"]["toy-O"]["scores"]["raw"] == f"{tmp_path.name}/test_scores.txt"
    assert not (tmp_path / "eval" / "toy-O" / "scores_raw.txt").exists()
    assert result["eval"]["score_norm"] == {"cohort": "train", "n_utterances": 20, "n_members": 20, "top_n": 5}


def test_the_eer_threshold_splits_the_validation_scores_at_the_eer(tmp_path):
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
    labels = np.array([0, 0, 1, 1, 1, 0])
    threshold = evaluation.eer_threshold(scores, labels)
    accepted = scores >= threshold
    false_accept = np.mean(accepted[labels == 0])
    false_reject = np.mean(~accepted[labels == 1])
    assert max(false_accept, false_reject) * 100 == pytest.approx(compute_eer(scores, labels))
    path = save_encoder(tmp_path / "best.model", tiny_encoder(), {"stage": "stage1"})
    evaluation.store_threshold(path, threshold)
    assert checkpoint_threshold(path) == pytest.approx(threshold)
    assert torch.load(path, weights_only=True)["stage"] == "stage1"


def test_centroids_cohort_uses_one_member_per_pseudo_label(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    labels = np.arange(len(entries)) % 3
    cohort = evaluation.plan_cohort("centroids", 0, 3, entries, tiny_corpus / "train", 0, labels)
    assert len(cohort.paths) == len(entries) and np.array_equal(cohort.pseudo_labels, labels)
    # a top N beyond the cohort's members takes all of them
    assert evaluation.plan_cohort("centroids", 0, 4, entries, tiny_corpus / "train", 0, labels).top_n == 3
    with pytest.raises(ValueError, match="norm_cohort='centroids': the cohort has 1 member"):
        evaluation.plan_cohort("centroids", 0, 4, entries, tiny_corpus / "train", 0, np.zeros(len(entries)))
    assert evaluation.plan_cohort("none", 0, 4, entries, tiny_corpus / "train", 0) is None


def test_bad_lists_are_one_line_errors_naming_them(tiny_corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"eval_trials\['Vox1-H'\]: trial list .*missing.txt does not exist"):
        evaluation.read_trial_lists({"Vox1-H": tmp_path / "missing.txt"}, tiny_corpus / "test")
    emb = np.eye(2, dtype=np.float32)
    stray = evaluation.TrialList("X", tmp_path / "x.txt", [Trial(1, "a.wav", "c.wav")])
    with pytest.raises(ValueError, match=r"eval_trials\['X'\] .*x.txt: names c.wav, which is not among the 2 embedded"):
        evaluation.score_lists(emb, ["a.wav", "b.wav"], {"X": stray})
    outside = tmp_path / "outside.txt"
    write_trials(outside, read_trials(tiny_corpus / "lists" / "trials.txt")[:2] + [Trial(0, "id1/none.wav", "x.wav")])
    with pytest.raises(ValueError, match="outside.txt"):
        evaluation.read_trial_lists({"O": outside}, tiny_corpus / "test")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["a.txt"], r"Cfg.eval_trials=\['a.txt'\] must be a mapping"),
        ({"Vox1 O": "a.txt"}, r"Cfg.eval_trials\['Vox1 O'\]='Vox1 O' must be a plain name"),
        ({"O": ""}, r"Cfg.eval_trials\['O'\]='' must be a trial-list path"),
    ],
)
def test_bad_eval_trials_parameters_name_the_parameter(value, message):
    with pytest.raises(ValueError, match=message):
        evaluation.check_eval_trials("Cfg", value)
