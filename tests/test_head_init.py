import numpy as np
import pytest
import torch

from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.training.stage2.head_init import class_centroids, init_head_from_centroids


def test_centroids_are_unit_class_means_and_empty_classes_keep_their_rows():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [3.0, 4.0]])
    labels = np.array([0, 0, 1, 3])
    centroids, empty = class_centroids(emb, labels, n_clusters=4)
    np.testing.assert_allclose(centroids[0].numpy(), [2**-0.5, 2**-0.5], rtol=1e-6)
    np.testing.assert_allclose(centroids[1].numpy(), [0.0, 1.0])
    np.testing.assert_allclose(centroids[3].numpy(), [0.6, 0.8], rtol=1e-6)
    assert empty.tolist() == [False, False, True, False]

    torch.manual_seed(0)
    head = AAMSoftmax(4, emb_dim=2)
    random_row = head.weight[2].detach().clone()
    assert init_head_from_centroids(head, emb, labels) == 3
    torch.testing.assert_close(head.weight[2].detach(), random_row)
    torch.testing.assert_close(head.weight[3].detach(), torch.tensor([0.6, 0.8]))


def test_a_centroid_head_gives_low_loss_to_samples_of_their_class():
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.normal(size=(192, 8)))[0].T  # 8 orthonormal class directions
    labels = np.repeat(np.arange(8), 20)
    emb = directions[labels] + 0.2 * rng.normal(size=(160, 192))
    head = AAMSoftmax(8)
    before = head(torch.tensor(emb, dtype=torch.float32), torch.tensor(labels)).loss
    init_head_from_centroids(head, emb, labels)
    after = head(torch.tensor(emb, dtype=torch.float32), torch.tensor(labels)).loss
    assert float(after) < 0.2 * float(before)


def test_bad_shapes_and_labels_are_named():
    with pytest.raises(ValueError, match="emb must be"):
        class_centroids(np.zeros((3, 2)), np.zeros(2, int), 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        class_centroids(np.zeros((2, 2)), np.array([0, 2]), 2)


def _tiny_stage2_params(corpus, runs_dir, **overrides) -> dict:
    """Stage II parameters on the tiny corpus, from a freshly saved narrow encoder standing in for Stage I."""
    from lgl_helpers.core.models import ECAPATDNN, save_encoder

    torch.manual_seed(0)
    init_model = save_encoder(runs_dir / "stage1.model", ECAPATDNN(16, mfa_channels=32).eval())
    params = dict(
        run_name="t",
        runs_dir=str(runs_dir),
        init_model=str(init_model),
        train_list=str(corpus / "lists" / "train_list.txt"),
        train_root=str(corpus / "train"),
        test_root=str(corpus / "test"),
        trials=str(corpus / "lists" / "trials.txt"),
        n_clusters=8,
        cluster_n_iter=5,
        frames=40,
        batch_size=16,
        max_iterations=1,
        workers=0,
        device="cpu",
        interactive=False,
    )
    return params | overrides


def test_phase_t_starts_from_the_centroids_of_the_stage1_embeddings(tiny_corpus, tmp_path):
    from lgl_helpers.training import stage2

    config = stage2.BaselineConfig(**_tiny_stage2_params(tiny_corpus, tmp_path, head_init="centroids"))
    engine = stage2.Engine(config, stage2.prepare_data(config), None)
    engine.load_or_start()
    engine.cluster_step(1)
    _, head = engine.build_models(1, "T")
    emb = np.load(engine.stage_dir / "iter_01" / "embeddings.npy")
    centroids, empty = class_centroids(emb, engine.pseudo_labels(1), 8)
    torch.testing.assert_close(head.weight.detach()[~torch.from_numpy(empty)], centroids[~torch.from_numpy(empty)])
    with pytest.raises(ValueError, match="head_init='xavier' must be one of"):
        stage2.BaselineConfig(head_init="xavier")


@pytest.mark.slow
def test_weight_average_is_what_an_epoch_evaluates_saves_and_resumes_from(tiny_corpus, tmp_path):
    from lgl_helpers.core.models import ECAPATDNN, load_encoder
    from lgl_helpers.training import stage2
    from lgl_helpers.training.stage2.averaging import EncoderAverage
    from lgl_helpers.training.state import load_checkpoint

    params = _tiny_stage2_params(tiny_corpus, tmp_path, max_epochs_per_phase=2, ema_decay=0.5)
    whole = stage2.run_stage2(stage2.BaselineConfig(**params))
    stage_dir = tmp_path / "t" / "stage2_baseline"
    last = load_checkpoint(stage_dir / "iter_01" / "T" / "epoch_002.model")
    assert last["ema_n_averaged"] == 2 * 3  # every optimizer step of 2 epochs (48 utterances / 16)
    raw, averaged = last["train_encoder"], last["encoder"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)  # the model is the average, not the raw weights

    # A run interrupted after epoch 1 resumes to the same average and raw weights.
    def crash_after_first(record, state):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    rerun = stage2.BaselineConfig(**dict(params, run_name="u"))
    with pytest.raises(KeyboardInterrupt):
        stage2.run_stage2(rerun, on_epoch=crash_after_first)
    resumed = stage2.run_stage2(rerun)
    again = load_checkpoint(tmp_path / "u" / "stage2_baseline" / "iter_01" / "T" / "epoch_002.model")
    for key in raw:
        torch.testing.assert_close(again["encoder"][key], averaged[key], rtol=0, atol=0)
        torch.testing.assert_close(again["train_encoder"][key], raw[key], rtol=0, atol=0)
    assert resumed["eer"] == whole["eer"]
    assert load_encoder(stage_dir / "best.model").mfa_channels == 32
    with pytest.raises(ValueError, match="ema_decay=1.0 must be in"):
        EncoderAverage(ECAPATDNN(16), 1.0)
