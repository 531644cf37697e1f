import numpy as np
import torch

from itemlm.cf.mostpop import MostPopular
from itemlm.cf.sasrec import SASRec, SASRecConfig, left_pad, train_sasrec
from itemlm.data.splits import leave_one_out_split
from itemlm.cf.evaluate import evaluate_ranking


def test_left_padding_and_causality():
    batch = left_pad([np.array([3, 4]), np.array([5])], 4)
    assert batch.tolist() == [[0, 0, 4, 5], [0, 0, 0, 6]]
    model = SASRec(10, SASRecConfig(hidden=16, layers=1, max_length=4, dropout=0.0)).eval()
    a = model(torch.tensor([[0, 1, 2, 3]]))
    b = model(torch.tensor([[0, 1, 2, 7]]))
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)  # the future never leaks backwards
    assert not torch.isnan(a).any()


def test_sasrec_beats_mostpop_on_ml100k(ml100k):
    split = leave_one_out_split(ml100k)
    scorer = train_sasrec(split, SASRecConfig(epochs=15, seed=0))
    sasrec = evaluate_ranking(scorer.for_stage("test").score, split, "test").metrics
    mostpop = evaluate_ranking(MostPopular(split).score, split, "test").metrics
    assert sasrec["HR@10"] > mostpop["HR@10"]


def test_every_training_sequence_is_read_once_an_epoch(ml100k, monkeypatch):
    import itemlm.cf.sasrec as sasrec

    read: list[int] = []
    real_left_pad = sasrec.left_pad

    def recording(chunk, length):
        read.extend(id(sequence) for sequence in chunk)
        return real_left_pad(chunk, length)

    monkeypatch.setattr(sasrec, "left_pad", recording)
    split = leave_one_out_split(ml100k)
    count = sum(1 for sequence in split.train_sequences() if len(sequence) >= 2)
    sasrec.train_sasrec(split, SASRecConfig(hidden=8, layers=1, epochs=2, batch_size=100, max_length=5))
    first, second = read[:count], read[count:]
    assert len(read) == 2 * count
    # each epoch a permutation of the training sequences, not draws with repeats
    assert len(set(first)) == count and set(second) == set(first) and second != first


def batches_per_epoch(split, config: SASRecConfig) -> int:
    """The batches one epoch reads: every training sequence of at least two items, once."""
    return -(-sum(1 for s in split.train_sequences() if len(s) >= 2) // config.batch_size)


def test_a_stopped_training_continues_from_its_last_epoch_to_the_same_weights(ml100k, monkeypatch, tmp_path):
    import itemlm.cf.sasrec as sasrec
    from itemlm.cf.epoch_checkpoint import EpochCheckpoint

    split = leave_one_out_split(ml100k)
    config = SASRecConfig(hidden=8, layers=1, epochs=4, batch_size=200, max_length=5, seed=3)
    unbroken = sasrec.train_sasrec(split, config).model.state_dict()

    folder = tmp_path / "retriever.training"
    real_save = EpochCheckpoint.save

    def stop_after_two(self, epochs_done, *args):
        real_save(self, epochs_done, *args)
        if epochs_done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochCheckpoint, "save", stop_after_two)
    try:
        sasrec.train_sasrec(split, config, resume_folder=folder)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(EpochCheckpoint, "save", real_save)
    assert folder.is_dir()

    batches: list[int] = []
    real_left_pad = sasrec.left_pad
    monkeypatch.setattr(sasrec, "left_pad", lambda chunk, length: batches.append(1) or real_left_pad(chunk, length))
    resumed = sasrec.train_sasrec(split, config, resume_folder=folder).model.state_dict()
    assert len(batches) == 2 * batches_per_epoch(split, config)  # only the two epochs left were trained
    assert all(torch.equal(unbroken[name], resumed[name]) for name in unbroken)
    assert not folder.exists()  # removed once training ended


def test_a_saved_epoch_of_another_training_is_not_continued(ml100k, monkeypatch, tmp_path):
    import itemlm.cf.sasrec as sasrec
    from itemlm.cf.epoch_checkpoint import EpochCheckpoint

    split = leave_one_out_split(ml100k)
    config = SASRecConfig(hidden=8, layers=1, epochs=2, batch_size=200, max_length=5)
    folder = tmp_path / "retriever.training"
    other = SASRec(split.num_items, config)
    EpochCheckpoint(folder, {"config": "another"}).save(1, other, torch.optim.Adam(other.parameters()), np.random.default_rng(0))

    batches: list[int] = []
    real_left_pad = sasrec.left_pad
    monkeypatch.setattr(sasrec, "left_pad", lambda chunk, length: batches.append(1) or real_left_pad(chunk, length))
    trained = sasrec.train_sasrec(split, config, resume_folder=folder).model.state_dict()
    trained_batches = len(batches)
    fresh = sasrec.train_sasrec(split, config).model.state_dict()
    assert trained_batches == 2 * batches_per_epoch(split, config)
    assert all(torch.equal(trained[name], fresh[name]) for name in fresh)
