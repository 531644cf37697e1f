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
