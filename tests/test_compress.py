import numpy as np
import pytest
import torch
from torch import nn

import compress
import models
from compress.factorize.cp import cp_als, cp_reconstruct, cp_sequence, epc_correct, rank_one_norm_sum
from compress.factorize.rank import rank_by_energy, rank_by_ratio, rank_by_vbmf, select_rank
from compress.factorize.svd import svd_sequence
from compress.factorize.tucker2 import tucker2_sequence
from compress.layers import layer_macs, record_output_shapes


def _relative(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


# ---- single-layer factorizations ---------------------------------------------------------------


def test_full_rank_svd_reproduces_linear_and_1x1_conv():
    torch.manual_seed(0)
    linear = nn.Linear(24, 10)
    sequence, error = svd_sequence(linear, 10)
    x = torch.randn(5, 24)
    assert error < 1e-12 and _relative(sequence(x), linear(x)) < 1e-5
    conv = nn.Conv2d(12, 20, 1, stride=2, padding=1)
    sequence, _ = svd_sequence(conv, 12)
    x = torch.randn(2, 12, 9, 9)
    assert _relative(sequence(x), conv(x)) < 1e-5


def test_truncated_svd_error_is_the_dropped_spectrum():
    torch.manual_seed(0)
    linear = nn.Linear(30, 20)
    singular = torch.linalg.svdvals(linear.weight.double())
    _, error = svd_sequence(linear, 5)
    expected = float(singular[5:].pow(2).sum().sqrt() / singular.pow(2).sum().sqrt())
    assert error == pytest.approx(expected, rel=1e-9)


def test_full_rank_tucker2_reproduces_a_strided_padded_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, dilation=1)
    sequence, error = tucker2_sequence(conv, (8, 6))
    x = torch.randn(2, 6, 11, 13)
    assert error < 1e-10 and _relative(sequence(x), conv(x)) < 1e-4
    assert [type(m) for m in sequence] == [nn.Conv2d] * 3 and sequence[1].stride == (2, 2)


def test_cp_at_the_exact_rank_reproduces_a_low_rank_kernel():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(8, 3)), rng.normal(size=(5, 3)), rng.normal(size=(9, 3))
    kernel = cp_reconstruct(np.ones(3), [a, b, c]).reshape(8, 5, 3, 3)
    conv = nn.Conv2d(5, 8, 3, padding=1)
    conv.weight.data.copy_(torch.from_numpy(kernel))
    sequence, info = cp_sequence(conv, 3)
    x = torch.randn(2, 5, 10, 10)
    assert info["rel_error"] < 1e-6 and _relative(sequence(x), conv(x)) < 1e-5
    assert sequence[1].groups == 3 and sequence[1].padding == (1, 1)


def _degenerate_cp():
    """A noisy rank-3 4x4x4 tensor fitted at rank 6 > mode size by plain random-start ALS (tensorly): the fit
    uses large, cancelling, nearly collinear rank-1 terms, the degeneracy EPC exists for."""
    from tensorly.decomposition import parafac

    rng = np.random.default_rng(0)
    factors = [rng.normal(size=(4, 3)) for _ in range(3)]
    tensor = cp_reconstruct(np.ones(3), factors) + 0.05 * rng.normal(size=(4, 4, 4))
    cp = parafac(tensor, 6, init="random", n_iter_max=2000, tol=1e-9, random_state=0, normalize_factors=False)
    return tensor, np.asarray(cp.weights), [np.asarray(f) for f in cp.factors]


def test_epc_lowers_the_norm_sum_of_a_degenerate_cp_within_the_bound():
    tensor, weights, als = _degenerate_cp()
    als_error = np.linalg.norm(tensor - cp_reconstruct(weights, als))
    als_norm = rank_one_norm_sum(weights, als)
    assert als_norm > 50 * np.sum(tensor**2)  # degenerate: rank-1 terms far larger than the tensor
    epc_weights, epc = epc_correct(tensor, weights, als, delta=als_error)
    epc_error = np.linalg.norm(tensor - cp_reconstruct(epc_weights, epc))
    assert epc_error <= als_error * (1 + 1e-9)
    assert rank_one_norm_sum(epc_weights, epc) < 0.2 * als_norm


def _tensorly_error(layer, rank, init):
    import tensorly as tl
    from tensorly.decomposition import parafac

    weight = layer.weight.detach().double().numpy()
    tensor = weight.reshape(weight.shape[0], weight.shape[1], -1)
    cp = parafac(tensor, rank, init=init, n_iter_max=500, tol=1e-9, random_state=0, normalize_factors=False)
    return float(np.linalg.norm(tensor - tl.cp_to_tensor(cp)) / np.linalg.norm(tensor))


def test_cp_converges_at_least_as_far_as_tensorly_500_iterations_on_slimnets_stem():
    torch.manual_seed(0)
    stem = models.create_model("slimnet").conv1[0]
    _, info = cp_sequence(stem, 74)
    best = min(_tensorly_error(stem, 74, init) for init in ("random", "svd"))
    assert info["rel_error"] <= 1.02 * best  # measured: 0.2636 against tensorly's 0.2851 (svd) / 0.2867 (random)
    assert 1 <= info["als_iters_run"] <= 500 and info["als_dtype"] == "float64"


@pytest.mark.slow
def test_cp_converges_at_least_as_far_as_tensorly_500_iterations_on_a_64_to_96_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 96, 3)
    _, info = cp_sequence(conv, 288)
    assert info["rel_error"] <= 1.02 * min(_tensorly_error(conv, 288, init) for init in ("random", "svd"))  # 0.0900 vs 0.1230


def test_cp_als_stops_on_its_tolerance_and_reports_it():
    rng = np.random.default_rng(1)
    exact = cp_reconstruct(np.ones(2), [rng.normal(size=(5, 2)), rng.normal(size=(4, 2)), rng.normal(size=(3, 2))])
    weights, factors, info = cp_als(exact, 2, n_iter=500, tol=1e-8)
    assert info["iterations"] < 500 and info["rel_error"] < 1e-6  # an exact rank-2 tensor: converged early
    np.testing.assert_allclose(cp_reconstruct(weights, factors), exact, atol=1e-5)


def test_epc_with_a_looser_relative_delta_on_a_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    _, plain = cp_sequence(conv, 10)
    sequence, info = cp_sequence(conv, 10, epc=True, delta=plain["rel_error"] * 1.2)
    assert info["rel_error"] <= plain["rel_error"] * 1.2 + 1e-9
    assert info["norm_sum_epc"] <= info["norm_sum_als"]


def test_bad_ranks_and_layers_are_rejected():
    with pytest.raises(ValueError, match=r"svd rank must be in \[1, 4\]"):
        svd_sequence(nn.Linear(4, 6), 5)
    with pytest.raises(ValueError, match="ungrouped 1x1"):
        svd_sequence(nn.Conv2d(4, 4, 3), 2)
    with pytest.raises(ValueError, match="tucker2 ranks"):
        tucker2_sequence(nn.Conv2d(4, 4, 3), (5, 1))
    with pytest.raises(ValueError, match="ungrouped"):
        cp_sequence(nn.Conv2d(4, 4, 3, groups=4), 2)


# ---- rank selection ------------------------------------------------------------------------------


def test_rank_by_ratio_and_energy():
    assert rank_by_ratio(10, 0.25) == 2 and rank_by_ratio(10, 1.0) == 10 and rank_by_ratio(3, 0.01) == 1
    with pytest.raises(ValueError, match="rank_ratio"):
        rank_by_ratio(10, 0)
    matrix = np.diag([3.0, 2.0, 1.0])  # squared spectrum 9, 4, 1 of 14
    assert rank_by_energy(matrix, 9 / 14) == 1
    assert rank_by_energy(matrix, 0.92) == 2 and rank_by_energy(matrix, 0.93) == 3 and rank_by_energy(matrix, 1.0) == 3


def test_vbmf_finds_the_rank_of_a_noisy_low_rank_matrix():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(60, 4)) @ rng.normal(size=(4, 80)) * 3 + 0.1 * rng.normal(size=(60, 80))
    assert rank_by_vbmf(matrix) == 4
    with pytest.raises(ValueError, match="grad_align"):
        select_rank(matrix, 60, "psychic")


# ---- whole models through compress.apply ---------------------------------------------------------


@pytest.fixture(scope="module")
def slimnet_and_input():
    torch.manual_seed(0)
    return models.create_model("slimnet").eval(), torch.randn(1, 3, 218, 178)


def test_apply_leaves_the_input_untouched_and_skips_with_reasons(slimnet_and_input):
    model, x = slimnet_and_input
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new_model, report = compress.apply(model, "svd", x, rank_ratio=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    reasons = {row["layer"]: row["reason"] for row in report.layers}
    assert reasons["fc"] == "classifier kept"
    assert reasons["slim1.sse1.expand3_dw.0"] == "grouped/depthwise conv (groups=16)"
    assert reasons["conv1.0"] == "7x7 conv: use tucker2 or cp"
    assert report.params_before == 571_304 and report.params_after == sum(p.numel() for p in new_model.parameters())
    for row in report.compressed():  # rank = half of min(out, in); the chain in -> R -> out keeps the bias
        conv = model.get_submodule(row["layer"])
        rank = max(1, round(0.5 * min(conv.out_channels, conv.in_channels)))
        assert (
            row["rank"] == rank
            and row["params_after"] == rank * (conv.in_channels + conv.out_channels) + (conv.bias is not None) * conv.out_channels
        )
    assert report.params_after == 571_304 - sum(r["params_before"] - r["params_after"] for r in report.compressed()) == 389_288
    assert new_model.data_config == model.data_config
    assert all(
        isinstance(
            m,
            (
                nn.Conv2d,
                nn.Linear,
                nn.BatchNorm2d,
                nn.ReLU,
                nn.MaxPool2d,
                nn.AdaptiveAvgPool2d,
                nn.Flatten,
                nn.Sequential,
                models.SlimNet,
            ),
        )
        or type(m).__module__ == "models.slimnet"
        for m in new_model.modules()
    )


def test_full_rank_svd_of_slimnet_reproduces_its_outputs(slimnet_and_input):
    model, x = slimnet_and_input
    new_model, report = compress.apply(model, "svd", x, rank_ratio=1.0, skip_if_larger=False)
    assert len(report.compressed()) == 32  # every ungrouped 1x1 conv
    with torch.no_grad():
        assert _relative(new_model.eval()(x), model(x)) < 1e-4


def test_cp_epc_on_the_stem_only(slimnet_and_input):
    model, x = slimnet_and_input
    _, report = compress.apply(model, "cp_epc", x, rank_ratio=0.1, layers=["conv1.*"])
    (row,) = report.compressed()
    assert row["layer"] == "conv1.0" and row["rank"] == 15  # full CP rank bound min(96*3, 96*49, 3*49) = 147
    assert row["norm_sum_epc"] <= row["norm_sum_als"]
    assert row["macs_after"] < row["macs_before"]


def test_layer_selection_by_pattern_and_kernel_size(slimnet_and_input):
    model, x = slimnet_and_input
    _, report = compress.apply(model, "svd", x, rank_ratio=0.5, layers=["slim4.*"], exclude=["*.skip_projection.*"])
    names = {row["layer"] for row in report.compressed()}
    assert names and all(n.startswith("slim4.") and "skip_projection" not in n for n in names)
    with pytest.raises(ValueError, match="unknown options \\['rank_ration'\\]"):
        compress.apply(model, "svd", x, rank_ration=0.5)
    with pytest.raises(KeyError, match="unknown compression method 'svdd'"):
        compress.apply(model, "svdd", x)


def test_tucker2_and_cp_on_resnet18_3x3_layers():
    torch.manual_seed(0)
    model = models.create_model("resnet18").eval()
    x = torch.randn(1, 3, 224, 224)
    new_model, report = compress.apply(model, "tucker2", x, rank_ratio=0.5, kernel_sizes=[3], layers=["layer4.*"])
    # ranks (out/2, in/2): 256->512 keeps 458,752 of 1,179,648 weights, each 512->512 851,968 of 2,359,296
    assert len(report.compressed()) == 4 and report.params_before - report.params_after == 720_896 + 3 * 1_507_328
    assert new_model(x).shape == (1, 40)


def test_pruning_slimnet_at_half_ratio(slimnet_and_input):
    model, x = slimnet_and_input
    new_model, report = compress.apply(model, "prune", x, pruning_ratio=0.5, importance="l1")
    assert 150_000 < report.params_after < 160_000  # 0.571 M -> ~0.156 M, as torch-pruning documents
    assert new_model.fc.out_features == 40
    assert new_model(x).shape == (1, 40)


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor"])
@pytest.mark.parametrize("name", ["slimnet", "mobilenetv3_small_100", "squeezenet1_1", "resnet18"])
def test_every_criterion_prunes_zoo_models_to_a_runnable_smaller_model(name, importance):
    torch.manual_seed(0)
    model = models.create_model(name).eval()
    size = model.data_config["input_size"]
    x = torch.randn(1, *size)
    calibration = (torch.randn(2, *size), torch.randint(0, 2, (2, 40)).float()) if importance == "taylor" else None
    if importance == "bn_scale" and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):  # SqueezeNet, course CNN
        with pytest.raises(ValueError, match="has no BatchNorm layer"):
            compress.apply(model, "prune", x, pruning_ratio=0.3, importance=importance)
        return
    new_model, report = compress.apply(model, "prune", x, pruning_ratio=0.3, importance=importance, gradient_batch=calibration)
    # 30 % of the channels leave both sides of most layers: about half the parameters stay (not one layer's worth gone)
    assert report.params_after == sum(p.numel() for p in new_model.parameters())
    assert 0.35 < report.params_after / report.params_before < 0.85
    with torch.no_grad():
        assert new_model.eval()(x).shape == (1, 40)


@pytest.mark.slow
@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor"])
@pytest.mark.parametrize(
    "name",
    [
        "mobilenetv2_100",
        "mobilenetv3_large_100",
        "resnet50",
        "legacy_xception",
        "squeezenet1_0",
        "slimnet_pse",
        "slimnet_dmtl",
        "slimnet_dmtl_pse",
        "resnet18_dmtl",
        "resnet18_dmtl_pse",
        "course_cnn",
        "xception_transfer",
    ],
)
def test_every_criterion_prunes_the_larger_zoo_models(name, importance):
    test_every_criterion_prunes_zoo_models_to_a_runnable_smaller_model(name, importance)


def test_taylor_needs_a_gradient_batch_and_targets(slimnet_and_input):
    model, x = slimnet_and_input
    with pytest.raises(ValueError, match="gradient_batch"):
        compress.apply(model, "prune", x, importance="taylor")
    with pytest.raises(ValueError, match="importance 'l3'"):
        compress.apply(model, "prune", x, importance="l3")
    _, report = compress.apply(model, "prune", x, target_params=0.6)
    assert report.params_after <= 0.6 * report.params_before


def test_sparsity_zeros_weights_without_saving_macs(slimnet_and_input):
    model, x = slimnet_and_input
    new_model, report = compress.apply(model, "sparsity", x, amount=0.5)
    rows = report.compressed()
    assert all(r["macs_after"] == r["macs_before"] for r in rows)
    zero = sum(
        int((m.weight == 0).sum()) for n, m in new_model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n != "fc"
    )
    total = sum(m.weight.numel() for n, m in new_model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n != "fc")
    assert abs(zero / total - 0.5) < 0.01
    assert not any(n.endswith("_orig") for n, _ in new_model.named_parameters())  # a plain module again


def test_norm_penalty_sums_factor_weights(slimnet_and_input):
    model, x = slimnet_and_input
    new_model, report = compress.apply(model, "svd", x, rank_ratio=0.5, layers=["slim1.sse1.*"])
    penalty = compress.norm_penalty(new_model, report.factor_groups, 0.5)
    expected = 0.5 * sum(new_model.get_submodule(n).weight.pow(2).sum() for g in report.factor_groups for n in g)
    torch.testing.assert_close(penalty(new_model), expected)
    assert compress.norm_penalty(new_model, report.factor_groups, 0.0) is None


def test_layer_macs_formula():
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
    shapes = record_output_shapes(nn.Sequential(conv), torch.randn(1, 4, 5, 5))
    assert layer_macs(conv, shapes["0"]) == 5 * 5 * 8 * 2 * 9


def test_compressed_models_export_and_script(slimnet_and_input, tmp_path):
    model, x = slimnet_and_input
    new_model, _ = compress.apply(model, "svd", x, rank_ratio=0.5)
    scripted = torch.jit.trace(new_model.eval(), x)
    torch.testing.assert_close(scripted(x), new_model(x))
    torch.save(new_model.state_dict(), tmp_path / "svd.pt")


# ---- data-driven rank selection ------------------------------------------------------------------


def test_scaled_gradient_distance():
    from compress.rank_search import scaled_gradient_distance

    reference = torch.tensor([1.0, 2.0, 0.0])
    assert scaled_gradient_distance(reference, 3 * reference) == pytest.approx(0.0, abs=1e-6)
    assert scaled_gradient_distance(reference, torch.tensor([0.0, 0.0, 5.0])) == pytest.approx(float(reference.norm()))
    assert scaled_gradient_distance(reference, torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(2.0)


def _small_slimnet_and_batches():
    torch.manual_seed(0)
    model = models.create_model("slimnet", filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2]).eval()
    batches = [(torch.randn(4, 3, 218, 178), torch.randint(0, 2, (4, 40)).float()) for _ in range(2)]
    return model, batches


def test_grad_align_returns_valid_ranks_for_the_selected_layers():
    from compress.rank_search import grad_align_ranks

    model, batches = _small_slimnet_and_batches()
    x = torch.zeros(1, 3, 218, 178)
    ranks = grad_align_ranks(model, "svd", x, batches, candidate_ratios=[0.25, 0.75], layers=["slim4.sse1.*"])
    assert set(ranks) == {"slim4.sse1.squeeze.0", "slim4.sse1.expand1.0", "slim4.sse1.expand3_dw.3"}
    for name, rank in ranks.items():
        weight = model.get_submodule(name).weight
        assert rank in {max(1, round(r * min(weight.shape[0], weight.shape[1]))) for r in (0.25, 0.75)}
    new_model, report = compress.apply(model, "svd", x, ranks=ranks, layers=sorted(ranks), skip_if_larger=False)
    assert {row["layer"]: row["rank"] for row in report.compressed()} == ranks


def test_binary_search_keeps_the_smallest_rank_within_the_drop():
    from compress.rank_search import binary_search_ranks

    model, batches = _small_slimnet_and_batches()
    x = torch.zeros(1, 3, 218, 178)

    # An evaluator that only tolerates ranks >= 3 in slim4.sse1.squeeze.0 (by looking at the layer).
    def evaluate(candidate):
        layer = candidate.get_submodule("slim4.sse1.squeeze.0")
        rank = layer[0].out_channels if isinstance(layer, nn.Sequential) else 8
        return 90.0 if rank >= 3 else 80.0

    ranks = binary_search_ranks(model, "svd", x, batches, evaluate, max_drop=0.5, layers=["slim4.sse1.squeeze.0"])
    assert ranks == {"slim4.sse1.squeeze.0": 3}


# ---- the method table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("svd", {"rank_ratio": 0}, r"svd: rank_ratio must be in \(0, 1\], got 0"),
        ("svd", {"rank_ratio": True}, r"svd: rank_ratio must be in \(0, 1\], got True"),
        ("cp", {"als_iters": 0}, r"cp: als_iters must be an integer in \[1, inf\], got 0"),
        ("svd", {"als_iters": 10}, r"svd: unknown options \['als_iters'\]"),
        ("cp", {"delta": 0.1}, r"cp: unknown options \['delta'\]"),
        ("cp_epc", {"delta": 0}, r"cp_epc: delta must be in \(0, inf\], got 0"),
        ("tucker2", {"kernel_sizes": [3, 0]}, r"tucker2: kernel_sizes must be integers in \[1, inf\], got \[3, 0\]"),
        ("svd", {"ranks": {"fc": 0}}, r"svd: ranks must be a mapping \{layer name: rank >= 1"),
        ("svd", {"rank_selection": "psychic"}, r"svd: rank_selection 'psychic' is not one of \['ratio', 'energy'"),
        ("prune", {"round_to": 2.5}, r"prune: round_to must be an integer in \[1, inf\], got 2.5"),
        ("sparsity", {"amount": 1.0}, r"sparsity: amount must be in \(0, 1\), got 1.0"),
    ],
)
def test_validate_options_names_the_option_and_its_range(method, options, message):
    with pytest.raises(ValueError, match=message):
        compress.validate_options(method, **options)


def test_every_factorization_has_a_row_and_takes_the_shared_options():
    from compress.options import FACTORIZATION_OPTIONS

    for name in compress.list_methods():
        method = compress.get_method(name)
        if method.factorization is not None:
            assert set(FACTORIZATION_OPTIONS) <= set(method.options), name
    assert [n for n in compress.list_methods() if compress.get_method(n).factorization] == ["svd", "tucker2", "cp", "cp_epc"]
    with pytest.raises(KeyError, match="unknown compression method 'svdd'"):
        compress.get_method("svdd")


def test_a_data_driven_selector_needs_ranks(slimnet_and_input):
    model, x = slimnet_and_input
    with pytest.raises(ValueError, match="rank_selection 'grad_align' needs data: choose ranks with compress.rank_search"):
        compress.apply(model, "svd", x, rank_selection="grad_align", layers=["slim1.*"])


# ---- targets -------------------------------------------------------------------------------------


def test_global_ranks_take_error_where_the_spectrum_is_cheapest():
    from compress.factorize.budget import global_ranks
    from compress.factorize.svd import SVD

    fast, flat = nn.Linear(32, 32, bias=False), nn.Linear(32, 32, bias=False)
    u, _, v = torch.linalg.svd(torch.randn(32, 32))
    with torch.no_grad():
        fast.weight.copy_(u @ torch.diag(torch.tensor([10.0, 5.0] + [0.01] * 30)) @ v)  # rank ~2: cheap to truncate
        flat.weight.copy_(u @ torch.diag(torch.ones(32)) @ v)  # every direction matters
    candidates = [("fast", fast, (1, 32), (1, 32)), ("flat", flat, (1, 32), (1, 32))]
    total = 2 * 32 * 32
    # An SVD of a 32x32 layer at rank r costs 64 r MACs: 0.6 of 2048 leaves the cheap layer 1228 - 1024, i.e. rank 3.
    ranks = global_ranks(SVD, "svd", candidates, total, 0.6, "macs")
    assert ranks == {"fast": 3}  # the whole budget comes from the layer whose spectrum decays
    # dropped: 29 singular values of 0.01, of a spectrum 10, 5, 0.01 x 30
    assert SVD.error_bound(fast)(3) == pytest.approx(np.sqrt(29e-4 / (125 + 30e-4)), rel=1e-5)
    assert SVD.error_bound(fast)(1) == pytest.approx(svd_sequence(fast, 1)[1], rel=1e-9)  # exact for SVD
    with pytest.raises(ValueError, match=r"the least reachable is 0\.\d+ of the model's macs"):
        global_ranks(SVD, "svd", candidates, total, 0.01, "macs")


def test_weight_error_bounds_hold_for_tucker2_and_cp():
    from compress.factorize.cp import CP
    from compress.factorize.tucker2 import TUCKER2

    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3)
    assert TUCKER2.error_bound(conv)((6, 4)) >= tucker2_sequence(conv, (6, 4))[1] - 1e-9  # HOSVD bound >= HOOI error
    assert CP.error_bound(conv)(5) <= cp_sequence(conv, 5)[1]["rel_error"] + 1e-9  # a lower bound on any rank-5 CP


def test_macs_and_params_targets_are_met_globally(slimnet_and_input):
    from compress.layers import layer_macs, record_output_shapes

    model, x = slimnet_and_input

    def conv_linear_macs(m):
        shapes = record_output_shapes(m, x)
        return sum(layer_macs(layer, shapes[n]) for n, layer in m.named_modules() if n in shapes)

    compressed, report = compress.apply(model, "svd", x, target_macs=0.8)
    assert 0.75 < conv_linear_macs(compressed) / conv_linear_macs(model) <= 0.8
    assert {r["reason"] for r in report.layers if r["status"] == "skipped" and "budget" in r["reason"]} == {
        "left whole: the budget is met without it"
    }
    compressed, _ = compress.apply(model, "svd", x, target_params=0.5)
    assert 0.45 < sum(p.numel() for p in compressed.parameters()) / 571_304 <= 0.5


def test_layers_slower_in_the_runtime_stay_whole(slimnet_and_input, monkeypatch):
    import compress.factorize.engine as engine

    model, x = slimnet_and_input
    monkeypatch.setattr(engine, "slower_in_runtime", lambda layer, replacement, shape, runtime: (shape[1] == 96, 1.0, 2.0))
    _, report = compress.apply(model, "svd", x, rank_ratio=0.5, runtime="onnxruntime", layers=["slim1.*"])
    reasons = {r["layer"]: r["reason"] for r in report.layers}
    assert (
        reasons["slim1.skip_projection.0"] == "factorized form is slower in onnxruntime: 2.000 ms vs 1.000 ms"
    )  # its input has 96 channels
    assert reasons["slim1.sse1.expand1.0"] == ""


def _speedup_by_parameters(original, compressed, runtime, example, batch=1) -> float:
    """A stand-in for ``compress.latency_target.measured_speedup`` where time is proportional to parameters."""
    return sum(p.numel() for p in original.parameters()) / sum(p.numel() for p in compressed.parameters())


@pytest.mark.parametrize("method, knob", [("prune", "pruning ratio"), ("svd", "MAC budget")])
def test_latency_targets_search_measured_speedups(slimnet_and_input, monkeypatch, method, knob):
    import compress.factorize.engine as engine
    import compress.latency_target as targets

    model, x = slimnet_and_input
    # A stand-in runtime where time is proportional to parameters: the target then fixes the parameters exactly.
    monkeypatch.setattr(
        targets,
        "measured_speedup",
        _speedup_by_parameters,
    )
    monkeypatch.setattr(engine, "slower_in_runtime", lambda layer, replacement, shape, runtime: (False, 1.0, 1.0))
    compressed, report = compress.apply(model, method, x, target_latency=0.8, runtime="onnxruntime")
    kept = sum(p.numel() for p in compressed.parameters()) / 571_304
    assert 0.55 < kept <= 0.8 and report.notes and knob in report.notes[0] and "in onnxruntime" in report.notes[0]
    assert report.warnings == []
    with pytest.raises(ValueError, match="out of reach"):
        compress.apply(model, method, x, target_latency=0.01, runtime="onnxruntime")


def test_an_unreachable_latency_target_keeps_the_fastest_level_when_asked_and_warns(slimnet_and_input, monkeypatch):
    import compress.latency_target as targets

    model, x = slimnet_and_input
    # time proportional to parameters, so the most pruned of the grid's levels (max_pruning_ratio) is the fastest
    monkeypatch.setattr(
        targets,
        "measured_speedup",
        _speedup_by_parameters,
    )
    most, _ = compress.apply(model, "prune", x, pruning_ratio=0.9)
    speedup = 571_304 / sum(p.numel() for p in most.parameters())
    kept, report = compress.apply(model, "prune", x, target_latency=0.01, runtime="onnxruntime", if_unreachable="fastest")
    assert sum(p.numel() for p in kept.parameters()) == sum(p.numel() for p in most.parameters())
    assert report.warnings == [
        f"target_latency 0.01 in onnxruntime not reached: kept the level measured fastest (pruning ratio 0.900, "
        f"{speedup:.2f}x faster than the original, 100.00x needed)"
    ]
    with pytest.raises(ValueError, match=r"prune: if_unreachable 'closest' is not one of \['error', 'fastest'\]"):
        compress.apply(model, "prune", x, target_latency=0.01, runtime="onnxruntime", if_unreachable="closest")
    # the factorizations take the same option: the least MAC budget of their grid is the fastest level here
    import compress.factorize.engine as engine

    monkeypatch.setattr(engine, "slower_in_runtime", lambda layer, replacement, shape, runtime: (False, 1.0, 1.0))
    _, report = compress.apply(model, "svd", x, target_latency=0.01, runtime="onnxruntime", if_unreachable="fastest")
    assert len(report.warnings) == 1 and report.warnings[0].startswith(
        "target_latency 0.01 in onnxruntime not reached: kept the level measured fastest (MAC budget "
    )


@pytest.mark.slow
def test_the_three_lwalm_compressions_of_resnet18_finish_in_three_minutes_each():
    import time

    torch.manual_seed(0)
    model = models.create_model("resnet18", input_size=[3, 218, 178]).eval()
    x = torch.zeros(1, 3, 218, 178)
    for first in (
        {"method": "tucker2", "rank_ratio": 0.25},
        {"method": "cp", "rank_ratio": 0.05},
        {"method": "cp_epc", "rank_ratio": 0.05},
    ):
        started = time.perf_counter()
        options = {k: v for k, v in first.items() if k != "method"}
        step1, report = compress.apply(model, first["method"], x, kernel_sizes=[3], **options)
        exclude = [n for group in report.factor_groups for n in group]
        compress.apply(step1, "svd", x, rank_ratio=0.25, exclude=exclude)
        assert time.perf_counter() - started < 180, first
        assert all(r["decompose_seconds"] > 0 for r in report.compressed())


def test_a_made_up_factorization_needs_one_function_and_one_row(slimnet_and_input, monkeypatch):
    """Adding a factorization: its decomposition with a Factorization row, and one row of the method table, nothing
    else (issues 19 and 30)."""
    from bench.study.variants import parse_variant
    from compress.factorize import svd
    from compress.factorize.factorization import Factorization, matrix_full_rank, pointwise_only
    from compress.methods import METHODS, factorization_method
    from compress.options import FACTORIZATION_OPTIONS

    calls = []

    def halve_decompose(module, rank, options):  # the new decomposition: SVD's, counted
        calls.append((module.in_channels, rank))
        return svd.svd_decompose(module, rank, options)

    def flat_error(module):  # its own error bound: 0.5 at every rank below full
        full = matrix_full_rank(module)
        return lambda rank: 0.0 if rank >= full else 0.5

    row = Factorization(
        applies_to=pointwise_only,
        full_rank=matrix_full_rank,
        rank_of=lambda module, r: r,
        select_rank=svd.svd_rank,
        layers=svd.svd_layers,
        decompose=halve_decompose,
        error_bound=flat_error,
    )
    monkeypatch.setitem(METHODS, "madeup", factorization_method("madeup", "a test factorization", FACTORIZATION_OPTIONS, row))
    model, x = slimnet_and_input
    assert "madeup" in compress.list_methods()
    new_model, report = compress.apply(model, "madeup", x, rank_ratio=0.5, layers=["slim1.*"])
    assert calls and len(report.compressed()) == len(calls) and new_model(x).shape == (1, 40)
    calls.clear()
    _, report = compress.apply(model, "madeup", x, target_params=0.8)  # the budget search reads the row's error bound
    assert calls and sum(p.numel() for p in _.parameters()) <= 0.8 * 571_304
    assert parse_variant("madeup:rank_ratio=0.25,layers=slim1.*") == [
        {"method": "madeup", "rank_ratio": 0.25, "layers": ["slim1.*"]}
    ]
