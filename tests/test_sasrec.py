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
