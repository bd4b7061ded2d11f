"""Stage 2: VQ codes, Hamming distance, retrieval and code statistics, against hand-computed answers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from scatterbird.models.spline import code_statistics, hamming, input_codes, nearest_neighbours, region_ids, spline_view
from scatterbird.models.spline.network import Abs

torch.set_num_threads(1)


def test_codes_are_active_pieces():
    """ReLU: 1[h > 0]; leaky ReLU likewise; abs: 1[h > 0] (piece +h); max-pool: the argmax in each window."""
    net = nn.Sequential(nn.Identity(), nn.ReLU(), nn.LeakyReLU(0.1), Abs(), nn.MaxPool1d(2))
    view = spline_view(net)
    x = torch.tensor([[[-1.0, 2.0, 3.0, -4.0]]], dtype=torch.float64)
    relu, leaky, absc, pool = input_codes(view, x)
    assert relu.tolist() == [[0, 1, 1, 0]]
    assert leaky.tolist() == [[0, 1, 1, 0]]  # its input is the ReLU's output (0 counts as off)
    assert absc.tolist() == [[0, 1, 1, 0]]
    assert pool.tolist() == [[1, 0]]  # windows (0, 2) and (3, 0) after abs
    assert relu.dtype == np.int16


def test_hamming_and_nearest_neighbours():
    a = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1], [1, 1, 0, 1]])
    d = hamming(a)
    assert d[0, 1] == 0.25 and d[0, 2] == 1.0 and d[2, 3] == 0.25 and np.all(np.diag(d) == 0)
    idx, dist = nearest_neighbours(a, k=2)
    assert idx[:, 0].tolist() == [1, 0, 3, 2]  # self excluded; ties broken by index
    assert dist[:, 0].tolist() == [0.25, 0.25, 0.25, 0.25]
    idx, dist = nearest_neighbours(a[:1], a, k=1)  # a separate bank: the query itself is found
    assert idx.tolist() == [[0]] and dist.tolist() == [[0.0]]


def test_code_statistics_known_answers():
    layer1 = np.array([[0, 1], [0, 1], [1, 1], [1, 0]])
    layer2 = np.array([[1], [0], [1], [1]])
    y = np.array([0, 0, 1, 1])
    s1, s2 = code_statistics([layer1, layer2], y)
    assert s1["unique_codes"] == 3 and s1["unique_regions"] == 3
    assert np.isclose(s1["code_entropy_bits"], 1.5)  # histogram (2, 1, 1)
    # unit 0 uses piece 1 half the time (1 bit); unit 1 three quarters (0.811 bits)
    assert np.isclose(s1["unit_entropy_bits"], (1.0 + 0.8112781244591328) / 2)
    assert s1["same_class_shared_region"] == 0.5  # pair (0,1) shares, pair (2,3) does not
    assert s1["diff_class_shared_region"] == 0.0
    assert s2["unique_codes"] == 2 and s2["unique_regions"] == 4  # layer 2 splits clips 0 and 1
    assert s2["same_class_shared_code"] == 0.5 and s2["same_class_shared_region"] == 0.0
    assert np.isclose(s2["region_entropy_bits"], 2.0)
    # 1-NN at layer 1: 0->1, 1->0 (correct), 2->0 (tie with 3 broken by index: wrong), 3->2 (right)
    assert s1["knn1_accuracy"] == 0.75
    assert np.isclose(s1["hamming_within"], (0 + 0.5) / 2)


def test_region_ids_are_cumulative():
    c1 = np.array([[0], [0], [1]])
    c2 = np.array([[0], [1], [0]])
    alone = region_ids([c1, c2], cumulative=False)
    cum = region_ids([c1, c2])
    assert alone[1][0] == alone[1][2] and cum[1][0] != cum[1][2]  # same layer-2 code, different region
    assert len(set(cum[1].tolist())) == 3


def test_normalised_unit_entropy():
    codes = np.array([[0, 0], [1, 1], [2, 0], [3, 1]])  # unit 0 uniform over 4 pieces (2 bits); unit 1 over 2 of 4
    (s,) = code_statistics([codes], n_pieces=[4])
    assert np.isclose(s["unit_entropy_bits"], 1.5) and np.isclose(s["unit_entropy_normalised"], 0.75)
