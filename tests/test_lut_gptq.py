"""GPTQ's sweeps (converters/transforms/lut_gptq.py), on linear layers with correlated inputs:
onto k-means tables, the weights land on their group's table, the table is registered for the
converter, and the sweep beats rounding each weight to its nearest entry; the tables' k-means
(kmeans.py) against the exact one; layers reading one input get what each would alone; int4
gives coremltools' GPTQ's weights and scales bit for bit, and the nested sweep the same but
for float rounding.

The real-weight evidence (SmolLM2-135M lut4/lut6 on the held-out passage) is in
test_compression.py."""

from __future__ import annotations

import pytest
import torch

from converters.transforms import lut_gptq
from converters.transforms.kmeans import weighted_tables
from converters.transforms.lut_gptq import BlockGPTQ, LutGPTQ, ModuleBlockGPTQConfig, ModuleLutGPTQConfig, nearest_entries


def _layer_and_inputs(rows=32, columns=64, samples=512):
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(columns, rows, bias=False)
    layer.weight.data = torch.randn(rows, columns, generator=generator)
    mixing = torch.randn(columns, columns, generator=generator) / columns**0.5
    scales = torch.logspace(-1, 1, columns)  # some inputs matter 100x more than others
    inputs = (torch.randn(samples, columns, generator=generator) @ mixing + 0.5 * torch.randn(samples, columns, generator=generator)) * scales
    return layer, inputs


def _output_error(inputs, weight, reference):
    return float(((inputs @ weight.T - inputs @ reference.T) ** 2).mean())


@pytest.mark.parametrize("bits,group", [(4, 1), (4, 8), (3, 4)])
def test_weights_land_on_their_groups_table_and_beat_nearest_rounding(bits, group):
    layer, inputs = _layer_and_inputs()
    original = layer.weight.data.clone()
    algorithm = LutGPTQ(layer, ModuleLutGPTQConfig(bits=bits, group_size=group))
    algorithm.add_batch(inputs, layer(inputs))
    algorithm.compress()

    lut = layer.get_buffer("_COREML_/weight/lut")
    assert lut.shape == (32 // group, 1, 2**bits, 1)
    tables = lut[:, 0, :, 0]
    assert torch.all(tables[:, 1:] >= tables[:, :-1])
    rows = layer.weight.data.reshape(32 // group, -1)
    assert all(torch.isin(rows[g], tables[g]).all() for g in range(len(rows)))  # every weight is a table entry

    rounded = nearest_entries_matrix(original, tables.repeat_interleave(group, 0))
    assert _output_error(inputs, layer.weight.data, original) < 0.8 * _output_error(inputs, rounded, original)


def nearest_entries_matrix(weight, row_tables):
    return torch.stack([nearest_entries(weight[:, j], row_tables) for j in range(weight.shape[1])], dim=1)


def test_tables_weigh_each_weight_by_its_inputs_importance():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(4, 256, generator=generator)
    flat, important = torch.ones(256), torch.ones(256)
    important[:16] = 1000.0  # 16 inputs dominate the layer's output
    for importance in (flat, important):
        tables = weighted_tables(weight, importance, bits=2, group_size=4)
        assert tables.shape == (1, 4)
    plain = weighted_tables(weight, flat, bits=2, group_size=4).repeat(4, 1)
    weighted = weighted_tables(weight, important, bits=2, group_size=4).repeat(4, 1)

    def error(tables, columns):
        return sum(float(((weight[:, j] - nearest_entries(weight[:, j], tables)) ** 2).sum()) for j in columns)

    assert error(weighted, range(16)) < error(plain, range(16))  # the important weights fit better


def test_a_group_that_does_not_divide_the_rows_is_refused_so_the_layer_stays_for_the_data_free_pass():
    with pytest.raises(ValueError, match="30 output channels do not divide into groups of 16"):
        LutGPTQ(torch.nn.Linear(8, 30), ModuleLutGPTQConfig(bits=4, group_size=16))


@pytest.mark.parametrize("bits", [4, 6])
def test_tables_come_within_reach_of_the_exact_k_means(bits):
    """Started from quantiles, Lloyd's stalls with the tails unserved (5x the optimal error at
    6 bits); splitting keeps the tables near kmeans1d's exact optimum on heavy-tailed weights."""
    import kmeans1d
    import numpy as np

    weight = (np.random.default_rng(0).standard_t(4, size=(16, 576)) * 0.02).astype(np.float32)
    index, lut = kmeans1d.cluster(weight.reshape(-1).astype(np.float64), 2**bits)
    optimal = float(((np.asarray(lut)[np.asarray(index)] - weight.reshape(-1)) ** 2).sum())
    values = torch.from_numpy(weight).reshape(1, -1)
    tables = weighted_tables(values, torch.ones(values.shape[1]), bits, group_size=1)
    ours = float(((nearest_entries(values[0], tables.expand(values.shape[1], -1)) - values[0]) ** 2).sum())
    assert ours <= 1.15 * optimal


class _Attention(torch.nn.Module):
    """Three projections of one input (as a decoder layer's query, key and value), then one of
    another input: the first three share a Hessian, the last has its own."""

    def __init__(self, columns=64, generator=None):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(columns, rows, bias=False) for rows in (32, 16, 16))
        self.o = torch.nn.Linear(columns, 32, bias=False)
        for layer in (self.q, self.k, self.v, self.o):
            layer.weight.data = torch.randn(layer.weight.shape, generator=generator)

    def forward(self, x):
        return self.q(x), self.k(x), self.v(x), self.o(torch.tanh(x))


def _calibrated(model, batches, bits=4, group=4):
    """Drive the layers as coremltools' LayerwiseCompressor does: hooks hand each layer's input to
    its algorithm during forward calls, then each layer is compressed in order."""
    algorithms = {name: LutGPTQ(getattr(model, name), ModuleLutGPTQConfig(bits=bits, group_size=group)) for name in "qkvo"}
    hooks = [getattr(model, name).register_forward_hook(lambda _, inp, out, a=a: a.add_batch(inp[0].data, out.data))
             for name, a in algorithms.items()]
    for batch in batches:
        model(batch)
    for hook in hooks:
        hook.remove()
    for algorithm in algorithms.values():
        algorithm.compress()
        algorithm.cleanup()
    LutGPTQ.forget_inputs()
    return algorithms


def test_layers_reading_one_input_share_a_hessian_and_get_what_each_would_alone():
    generator = torch.Generator().manual_seed(2)
    model = _Attention(generator=generator)
    batches = [torch.randn(1, 128, 64, generator=generator) * torch.logspace(-1, 1, 64) for _ in range(3)]
    alone = {}
    for name in "qkvo":  # each layer calibrated on its own: nothing to share
        single = torch.nn.Linear(64, getattr(model, name).out_features, bias=False)
        single.weight.data = getattr(model, name).weight.data.clone()
        algorithm = LutGPTQ(single, ModuleLutGPTQConfig(bits=4, group_size=4))
        for batch in batches:
            x = torch.tanh(batch) if name == "o" else batch
            algorithm.add_batch(x, single(x))
        algorithm.compress()
        LutGPTQ.forget_inputs()
        alone[name] = (single.weight.data, single.get_buffer("_COREML_/weight/lut"))

    algorithms = _calibrated(model, batches)
    shared = algorithms["q"]._shared
    assert shared.members == [algorithms[n] for n in "qkv"] and algorithms["o"]._shared.members == [algorithms["o"]]
    for name in "qkvo":
        weight, lut = alone[name]
        assert torch.equal(getattr(model, name).get_buffer("_COREML_/weight/lut"), lut), name
        assert torch.allclose(getattr(model, name).weight.data, weight, atol=1e-6), name


INT4 = {"weight_dtype": "uint4", "granularity": "per_block", "block_size": 32, "hessian_dampening": 0.01}


def _one_input(columns=320, samples=4):
    """q/k/v-shaped weights and a batch of inputs they all read (one input always zero), over
    2.5 processing groups of columns."""
    generator = torch.Generator().manual_seed(3)
    weights = {name: torch.randn(rows, columns, generator=generator) for name, rows in (("q", 64), ("k", 32), ("v", 32))}
    mixing = torch.randn(columns, columns, generator=generator) / columns**0.5
    batch = (torch.randn(samples, 64, columns, generator=generator) @ mixing) * torch.logspace(-1, 1, columns)
    batch[..., 7] = 0
    return weights, batch


def _swept(weights, batch, algorithm, per_sample=False):
    """Each weight in a layer of its own, all fed the one batch (or its samples one by one, as
    coremltools' walk feeds them), compressed in order."""
    layers, algorithms = {}, {}
    for name, weight in weights.items():
        layers[name] = torch.nn.Linear(weight.shape[1], len(weight), bias=False)
        layers[name].weight.data = weight.clone()
        algorithms[name] = algorithm(layers[name])
    for inputs in (batch.split(1) if per_sample else [batch]):
        for name in weights:
            algorithms[name].add_batch(inputs, layers[name](inputs))
    for name in weights:
        algorithms[name].compress()
        algorithms[name].cleanup()
    LutGPTQ.forget_inputs()
    return layers, algorithms


def test_int4_gives_coremltools_gptqs_weights_and_scales_bit_for_bit_with_one_stacked_sweep():
    """coremltools' GPTQ fed the samples one by one, each layer alone; ours fed the batch (as the
    batched walk does), q/k/v sharing one Hessian and one sweep of their stacked rows."""
    from coremltools.optimize.torch.layerwise_compression.algorithms import GPTQ, ModuleGPTQConfig

    weights, batch = _one_input()
    with lut_gptq.one_thread():  # MKL's sums depend on the thread count: both on one
        reference, _ = _swept(weights, batch, lambda layer: GPTQ(layer, ModuleGPTQConfig.from_dict({"algorithm": "gptq", **INT4})),
                              per_sample=True)
    assert lut_gptq.INNER_GROUP == 128  # coremltools' order of sums: rank-1 updates over the whole group
    ours, algorithms = _swept(weights, batch, lambda layer: BlockGPTQ(
        layer, ModuleBlockGPTQConfig.from_dict({"algorithm": lut_gptq.BLOCKS_ALGORITHM, **INT4})))
    assert algorithms["q"]._shared.members == [algorithms[name] for name in "qkv"]  # one Hessian, one sweep
    for name in weights:
        for tensor in ("weight", "_COREML_/weight/quantization_scale", "_COREML_/weight/zero_point"):
            assert torch.equal(ours[name].get_parameter(tensor) if tensor == "weight" else ours[name].get_buffer(tensor),
                               reference[name].get_parameter(tensor) if tensor == "weight" else reference[name].get_buffer(tensor)), (name, tensor)
    assert ours["q"].get_buffer("_COREML_/weight/quantization_scale").shape == (64, 10)


@pytest.mark.parametrize("scheme", ["int4", "lut4"])
def test_the_nested_sweep_gives_the_same_weights_but_for_float_rounding(scheme, monkeypatch):
    """Rank-1 updates within 32 columns and a product for the rest of the group: the same sums
    in another order, so each weight within float rounding of the one-level sweep's, and the
    layer's output error the same."""
    monkeypatch.setattr(lut_gptq, "INNER_GROUP", 32)
    weights, batch = _one_input()
    if scheme == "int4":
        def algorithm(layer):
            return BlockGPTQ(layer, ModuleBlockGPTQConfig.from_dict({"algorithm": lut_gptq.BLOCKS_ALGORITHM, **INT4}))
    else:
        def algorithm(layer):
            return LutGPTQ(layer, ModuleLutGPTQConfig(bits=4, group_size=4))
    nested, _ = _swept(weights, batch, algorithm)
    monkeypatch.setattr(lut_gptq, "INNER_GROUP", 128)
    one_level, _ = _swept(weights, batch, algorithm)
    inputs = batch.reshape(-1, batch.shape[-1])
    for name, weight in weights.items():
        a, b = nested[name].weight.data, one_level[name].weight.data
        assert torch.isclose(a, b, rtol=1e-5, atol=0).float().mean() > 0.99, name
        assert _output_error(inputs, a, weight) == pytest.approx(_output_error(inputs, b, weight), rel=0.01), name


def test_a_layers_inputs_are_swept_side_by_side_at_its_first_compression_with_the_weights_of_one_at_a_time(monkeypatch):
    """The first compression of a decoder layer sweeps every input the layer read (q/k/v's, o's)
    on as many cores as it has, each sweep on one thread: the same weights and tables as one
    sweep after another."""
    generator = torch.Generator().manual_seed(4)
    model = _Attention(generator=generator)
    batches = [torch.randn(1, 128, 64, generator=generator) * torch.logspace(-1, 1, 64) for _ in range(2)]
    sweep_side_by_side, sweeps = lut_gptq.sweep_side_by_side, []
    monkeypatch.setattr(lut_gptq, "sweep_side_by_side", lambda inputs: (sweeps.append(len(inputs)), sweep_side_by_side(inputs)))
    results = {}
    for at_once in (1, 2):
        monkeypatch.setattr(lut_gptq, "SWEEPS_AT_ONCE", at_once)
        copy = _Attention()
        copy.load_state_dict(model.state_dict())
        _calibrated(copy, batches)
        results[at_once] = {name: (getattr(copy, name).weight.data.clone(), getattr(copy, name).get_buffer("_COREML_/weight/lut"))
                            for name in "qkvo"}
    assert sweeps == [2, 2]  # q/k/v's input and o's, both at q's compression
    for name in "qkvo":
        assert torch.equal(results[1][name][0], results[2][name][0]), name
        assert torch.equal(results[1][name][1], results[2][name][1]), name


def test_stepping_only_the_moving_rows_gives_every_table_of_stepping_them_all(monkeypatch):
    """Lloyd's steps go on with the rows still moving; each table is bit for bit the one that
    stepping every row until all settle (or the step limit) gives."""
    from converters.transforms import kmeans

    def every_row(ordered, running_counts, running_sums, tables, iterations):
        last = torch.full((len(ordered), 1), ordered.shape[1])
        for _ in range(iterations):
            midpoints = ((tables[:, 1:] + tables[:, :-1]) / 2).contiguous()
            edges = torch.cat([torch.zeros_like(last), torch.searchsorted(ordered, midpoints), last], dim=1)
            totals = running_counts.gather(1, edges[:, 1:]) - running_counts.gather(1, edges[:, :-1])
            sums = running_sums.gather(1, edges[:, 1:]) - running_sums.gather(1, edges[:, :-1])
            updated = torch.where(totals > 0, sums / totals.clamp_min(1e-300), tables.double()).float().sort(dim=1).values
            if torch.equal(updated, tables):
                break
            tables = updated
        return tables

    generator = torch.Generator().manual_seed(5)
    weight = torch.distributions.StudentT(3.0).sample((96, 80)) * torch.rand(96, 1, generator=generator)
    importance = torch.rand(80, generator=generator) + 0.01
    for bits, group, iterations in ((4, 1, 30), (6, 8, 30), (4, 2, 5)):  # 5: rows still moving at the limit
        ours = weighted_tables(weight, importance, bits, group, iterations)
        monkeypatch.setattr(kmeans, "_lloyd", every_row)
        assert torch.equal(weighted_tables(weight, importance, bits, group, iterations), ours), (bits, group, iterations)
        monkeypatch.undo()


def test_equal_weights_sorted_in_any_order_give_the_same_tables(monkeypatch):
    """numpy's sort may put equal weights in another order than torch's; on weights on a 4-bit
    grid (many ties, each tied weight counted differently) the tables are bit for bit torch's."""
    from converters.transforms import kmeans

    generator = torch.Generator().manual_seed(7)
    weight = torch.randint(-8, 8, (64, 96), generator=generator).float() * torch.rand(64, 1, generator=generator)
    importance = torch.rand(96, generator=generator) + 0.01
    for bits, group in ((4, 1), (6, 16), (2, 4)):
        ours = weighted_tables(weight, importance, bits, group)
        monkeypatch.setattr(kmeans, "_sorted_rows", lambda values: values.sort(dim=1, stable=True, descending=False))
        assert torch.equal(weighted_tables(weight, importance, bits, group), ours), (bits, group)
        monkeypatch.undo()


def _coreai_opt_int4(weight: torch.Tensor, block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """coreai-opt's data-free int4 per block (what quantize_weights(INT4, SYMMETRIC, PER_BLOCK) computes
    for each weight of a Core AI program): the levels it writes and its scales."""
    from coreai_opt.coreai_utils._coreai_imports import compression_types
    from coreai_opt.coreai_utils._utils.quantize_utils import _compute_qparams_by_dtype
    from coreai_opt.coreai_utils.common import QScheme

    data, scale, _ = _compute_qparams_by_dtype(weight.numpy(), compression_types.string_to_builtin("int4"),
                                               QScheme.SYMMETRIC, [1, block])
    return torch.from_numpy(data.astype("int64")), torch.from_numpy(scale)


def test_int4_onto_coreai_opts_grid_leaves_its_data_free_pass_nothing_to_move():
    """GPTQ onto coreai-opt's grid (a Core AI program's int4): coreai-opt's pass, which re-derives
    each block's scale from the weights it is given, writes the sweep's very levels, with its scales
    (its formula adds 1e-6 / 14 to each again: 5e-7 at most on a weight); coremltools' grid (16
    levels, another scale) it moves."""
    weights, batch = _one_input()
    grids = {}
    for grid in (lut_gptq.COREMLTOOLS_GRID, lut_gptq.COREAI_OPT_GRID):
        grids[grid], _ = _swept(weights, batch, lambda layer: BlockGPTQ(layer, ModuleBlockGPTQConfig.from_dict(
            {"algorithm": lut_gptq.BLOCKS_ALGORITHM, **INT4, "grid": grid})))
    for name, weight in weights.items():
        ours = grids[lut_gptq.COREAI_OPT_GRID][name]
        scales = ours.get_buffer("_COREML_/weight/quantization_scale")
        levels = (ours.weight.data / scales.repeat_interleave(32, dim=1)).round().long()
        assert levels.abs().max() == 7 and set(ours.get_buffer("_COREML_/weight/zero_point").unique().tolist()) == {8}
        theirs, their_scales = _coreai_opt_int4(ours.weight.data)
        assert torch.equal(theirs, levels), name
        assert torch.allclose(their_scales, scales + lut_gptq.COREAI_OPT_EPSILON / 14, rtol=1e-6, atol=0), name
        before = grids[lut_gptq.COREMLTOOLS_GRID][name].weight.data
        levels, scales = _coreai_opt_int4(before)
        moved = (levels * scales.repeat_interleave(32, dim=1) - before).abs() > 1e-5
        assert moved.float().mean() > 0.1, name  # what Core AI's int4 did to GPTQ's weights before (here 20 %)
