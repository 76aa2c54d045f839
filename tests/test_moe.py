"""Mixture of experts (llmcourse/moe.py): routing, capacity and dropped tokens, auxiliary losses, dispatches, models."""

import math

import pytest
import torch

from llmcourse import ModelConfig, auxiliary, build_model
from llmcourse.ffn import FeedForward, count_parameters, ffn_param_count
from llmcourse.moe import (
    MoEFeedForward,
    Router,
    capacity_mask,
    count_moe_parameters,
    expert_capacity,
    load_balancing_loss,
    moe_layers,
    route,
    router_z_loss,
    sort_by_expert,
)
from llmcourse.objectives import lm_loss


def _layer(D=8, F=16, E=4, k=1, seed=0, **kw) -> MoEFeedForward:
    torch.manual_seed(seed)
    return MoEFeedForward(D, F, E, k, "swiglu", bias=False, **kw)


def _identity_router(layer: MoEFeedForward) -> MoEFeedForward:
    """Router logits equal to the input (needs d_model == n_experts): routing is whatever x says."""
    with torch.no_grad():
        layer.router.gate.weight.copy_(torch.eye(layer.n_experts))
    return layer


# --- routing ---------------------------------------------------------------------------
def test_router_probabilities_sum_to_one_and_topk_indices():
    torch.manual_seed(0)
    router = Router(8, 5, top_k=2)
    x = torch.randn(20, 8)
    r = router(x)
    torch.testing.assert_close(r.probs.sum(-1), torch.ones(20))
    assert r.logits.dtype == r.probs.dtype == r.weights.dtype == torch.float32
    expected = torch.topk(router.gate(x), 2, dim=-1).indices
    assert torch.equal(r.experts, expected)
    assert (r.probs.gather(1, r.experts[:, :1]) >= r.probs.gather(1, r.experts[:, 1:])).all()


def test_top1_gate_is_the_top_probability_and_top2_is_renormalised():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 0.5]])
    probs, experts, weights = route(logits, 1)
    assert experts.squeeze(1).tolist() == [0, 1]
    torch.testing.assert_close(weights.squeeze(1), torch.softmax(logits, -1).max(-1).values)
    probs, experts, weights = route(logits, 2)
    assert experts.tolist() == [[0, 1], [1, 2]]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    # renormalised top-2 = softmax over the two top logits (Mixtral's form)
    top_logits = logits.gather(1, experts)
    torch.testing.assert_close(weights, torch.softmax(top_logits, -1))


def test_renormalize_option_overrides_the_top1_and_topk_rules():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    _, _, w = route(logits, 1, renormalize=True)  # Mixtral's code: the single gate becomes 1
    assert w.item() == 1.0
    _, _, w = route(logits, 2, renormalize=False)  # Qwen2-MoE / DeepSeek norm_topk_prob=False
    torch.testing.assert_close(w, torch.softmax(logits, -1)[:, :2])
    layer = _layer(k=1, router_renormalize=True)
    x = torch.randn(4, 8)
    out, r = layer(x, return_routing=True)
    assert (r.weights == 1).all()
    torch.testing.assert_close(out[0], layer.experts[int(r.experts[0, 0])](x[0]))
    with pytest.raises(ValueError, match="router_renormalize"):
        layer.router.renormalize = "yes"
    with pytest.raises(ValueError, match="capacity_scope"):
        layer.capacity_scope = "rows"
    with pytest.raises(ValueError, match="moe_dispatch"):
        layer.dispatch = "fast"


def test_router_computes_in_float32_for_bfloat16_inputs():
    router = Router(8, 4, top_k=2).to(torch.bfloat16)
    r = router(torch.randn(5, 8, dtype=torch.bfloat16))
    assert r.logits.dtype == torch.float32 and r.weights.dtype == torch.float32


def test_jitter_only_in_training():
    torch.manual_seed(0)
    router = Router(8, 4, jitter=0.1)
    x = torch.randn(50, 8)
    router.eval()
    clean = router.logits(x)
    torch.testing.assert_close(clean, router.gate(x))
    torch.testing.assert_close(router.logits(x), clean)
    router.train()
    noisy_a, noisy_b = router.logits(x), router.logits(x)
    assert not torch.allclose(noisy_a, clean) and not torch.allclose(noisy_a, noisy_b)
    # multiplicative noise in [1 - eps, 1 + eps] on the input: logits stay within eps * |x| |W| of the clean ones
    bound = 0.1 * x.abs() @ router.gate.weight.abs().t()
    assert ((noisy_a - clean).abs() <= bound + 1e-6).all()
    # the experts see the clean input: a layer in training mode with no dropout computes them on x itself
    layer = _layer(E=4, k=1, router_jitter=0.1).train()
    out, routing = layer(x, return_routing=True)
    expected = torch.stack([
        routing.weights[n, 0] * layer.experts[int(routing.experts[n, 0])](x[n]) for n in range(len(x))
    ])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


# --- capacity and dropped tokens --------------------------------------------------------
def test_capacity_formula():
    assert expert_capacity(10, 4, 2, capacity_factor=1.25) == math.ceil(1.25 * 10 * 2 / 4) == 7
    assert expert_capacity(4096, 8, 1, capacity_factor=1.0) == 512
    assert expert_capacity(10, 4, 2, capacity_factor=1.25, capacity=3) == 3  # an absolute capacity wins
    assert expert_capacity(10, 4, 2) is None
    with pytest.raises(ValueError, match="capacity_factor"):
        expert_capacity(10, 4, 1, capacity_factor=0.0)
    with pytest.raises(ValueError, match="expert_capacity"):
        expert_capacity(10, 4, 1, capacity=0)


@pytest.mark.parametrize("dispatch", ["sorted", "reference"])
def test_top1_drops_the_later_tokens_over_capacity_and_they_output_zero(dispatch):
    # 8 tokens, top-1 choices [0, 0, 0, 1, 0, 2, 0, 3]; capacity ceil(1.0 * 8 / 4) = 2
    choices = [0, 0, 0, 1, 0, 2, 0, 3]
    layer = _identity_router(_layer(D=4, E=4, capacity_factor=1.0, dispatch=dispatch))
    x = 3.0 * torch.eye(4)[choices] + 0.1 * torch.randn(8, 4)
    out, r = layer(x, return_routing=True)
    assert r.capacity == 2 and r.experts.squeeze(1).tolist() == choices
    assert r.dropped_tokens.tolist() == [False, False, True, False, True, False, True, False]  # 3rd, 4th, 5th to expert 0
    assert (out[r.dropped_tokens] == 0).all()
    for n in (~r.dropped_tokens).nonzero().squeeze(1).tolist():
        torch.testing.assert_close(out[n], r.weights[n, 0] * layer.experts[choices[n]](x[n]))
    with auxiliary.collect() as aux:
        layer(x)
    assert aux.stats["moe.dropped"] == pytest.approx(3 / 8) and aux.stats["moe.dropped_tokens"] == pytest.approx(3 / 8)
    assert aux.stats["moe.load"] == pytest.approx([5 / 8, 1 / 8, 1 / 8, 1 / 8])


def test_top2_serves_first_choices_before_second_choices():
    # (first, second) choices: t0 (0, 1), t1 (1, 0), t2 (0, 2), t3 (0, 1); capacity 2 per expert.
    # expert 0's queue: first choices t0, t2, t3, then t1's second choice -> keeps t0, t2.
    # expert 1's queue: t1 (first), then t0, t3 (second) -> keeps t1, t0. expert 2: t2 (second).
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [2.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    _, experts, _ = route(logits, 2)
    assert experts.tolist() == [[0, 1], [1, 0], [0, 2], [0, 1]]
    expected = [[True, True], [True, False], [True, True], [False, False]]
    assert capacity_mask(experts, 3, 2).tolist() == expected
    assert sort_by_expert(experts, 3, 2).kept.tolist() == expected
    # a token-order rule would have kept t1's second choice on expert 0 instead of t2's first
    for dispatch in ("sorted", "reference"):
        layer = _identity_router(_layer(D=3, E=3, k=2, expert_capacity=2, dispatch=dispatch))
        out, r = layer(logits, return_routing=True)
        assert r.kept.tolist() == expected and r.dropped_tokens.tolist() == [False, False, False, True]
        assert (out[3] == 0).all()
        # t1 keeps only its first choice, with its renormalised gate (not 1)
        torch.testing.assert_close(out[1], r.weights[1, 0] * layer.experts[1](logits[1]))


def test_capacity_per_sequence_or_per_batch():
    # 2 sequences of 4 tokens, every token to expert 0, capacity 2
    x = torch.tensor([5.0, 0.0, 0.0, 0.0]).expand(2, 4, 4).clone()
    batch = _identity_router(_layer(D=4, E=4, expert_capacity=2))
    _, r = batch(x, return_routing=True)
    assert r.dropped_tokens.view(2, 4).tolist() == [[False, False, True, True], [True, True, True, True]]
    seq = _identity_router(_layer(D=4, E=4, expert_capacity=2, capacity_scope="sequence"))
    for dispatch in ("sorted", "reference"):
        seq.dispatch = dispatch
        _, r = seq(x, return_routing=True)
        assert r.dropped_tokens.view(2, 4).tolist() == [[False, False, True, True], [False, False, True, True]]
    # with a capacity factor, the tokens that compete are one sequence's: ceil(1.0 * 4 * 1 / 4) = 1
    seq_cf = _identity_router(_layer(D=4, E=4, capacity_factor=1.0, capacity_scope="sequence"))
    assert seq_cf(x, return_routing=True)[1].capacity == 1
    assert batch.capacity(8) is not None and _layer(capacity_factor=1.0).capacity(8) == 2


def test_no_capacity_factor_drops_nothing():
    layer = _identity_router(_layer(D=4, E=4))
    x = torch.tensor([5.0, 0.0, 0.0, 0.0]).expand(64, 4)
    out, r = layer(x, return_routing=True)
    assert r.capacity is None and r.kept.all() and (out.abs().sum(-1) > 0).all()


def test_sorted_and_reference_capacity_rules_agree_on_random_routing():
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 3):
        for groups in (1, 4):
            logits = torch.randn(48, 6, generator=g) + torch.tensor([2.0, 1.0, 0, 0, 0, 0])  # skewed
            _, experts, _ = route(logits, k)
            for capacity in (None, 1, 3, 7):
                assert torch.equal(
                    capacity_mask(experts, 6, capacity, groups), sort_by_expert(experts, 6, capacity, groups).kept
                )


# --- auxiliary losses -----------------------------------------------------------------
def test_balance_loss_is_the_coefficient_for_uniform_router_and_e_times_it_when_collapsed():
    for k in (1, 2):
        layer = _layer(E=4, k=k, balance_loss_coef=0.01, router_z_loss_coef=0.0)
        with torch.no_grad():
            layer.router.gate.weight.zero_()  # every probability exactly 1/E
        with auxiliary.collect() as aux:
            layer(torch.randn(32, 8))
        assert aux.losses["moe.balance"].item() == pytest.approx(0.01, abs=1e-9)
        assert "moe.z_loss" not in aux.losses  # coefficient 0: nothing reported
        assert aux.stats["moe.entropy"] == pytest.approx(math.log(4), abs=1e-6)
    # every token sure of expert 0: f = (1, 0, 0, 0), P ~ (1, 0, 0, 0) -> E * coef
    probs = torch.softmax(torch.tensor([[30.0, 0, 0, 0]]).expand(16, 4), -1)
    assert load_balancing_loss(probs, torch.zeros(16, 1, dtype=torch.long)).item() == pytest.approx(4.0, abs=1e-6)
    # a crafted half-and-half router: f = (1/2, 1/2, 0, 0), P = probs.mean(0)
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.5, 0.2, 0.2]])
    experts = torch.tensor([[0], [1]])
    assert load_balancing_loss(probs, experts).item() == pytest.approx(4 * (0.5 * 0.4 + 0.5 * 0.3))


def test_z_loss_formula_and_reporting():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    expected = (math.log(4) ** 2 + math.log(sum(math.exp(v) for v in (1, 2, 3, 4))) ** 2) / 2
    assert router_z_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    layer = _identity_router(_layer(D=4, E=4, router_z_loss_coef=1e-3))
    with auxiliary.collect() as aux:
        layer(logits)
    assert aux.losses["moe.z_loss"].item() == pytest.approx(1e-3 * expected, rel=1e-6)


def test_nothing_is_computed_or_reported_outside_collect(monkeypatch):
    import llmcourse.moe as moe

    def boom(*args, **kwargs):
        raise AssertionError("computed although nobody collects")

    monkeypatch.setattr(moe, "load_balancing_loss", boom)
    monkeypatch.setattr(moe, "router_entropy", boom)
    _layer()(torch.randn(5, 8))  # no error: no loss or statistic was computed


# --- dispatches --------------------------------------------------------------------------
@pytest.mark.parametrize("k, capacity_factor, shared", [(1, 1.0, 0), (2, 0.75, 0), (2, None, 1), (3, 1.0, 2)])
def test_sorted_and_reference_dispatch_agree_in_values_and_gradients(k, capacity_factor, shared):
    layer = _layer(D=8, F=16, E=5, k=k, capacity_factor=capacity_factor, n_shared_experts=shared)
    x = torch.randn(3, 7, 8, requires_grad=True)
    results = []
    for dispatch in ("sorted", "reference"):
        layer.dispatch = dispatch
        layer.zero_grad()
        x.grad = None
        with auxiliary.collect() as aux:
            out, r = layer(x, return_routing=True)
        (out.pow(2).sum() + aux.total()).backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
        results.append((out.detach(), r.kept, x.grad.clone(), grads))
    (o1, k1, gx1, g1), (o2, k2, gx2, g2) = results
    if capacity_factor is not None and capacity_factor < 1:
        assert (~k1).any()  # the case really drops assignments
    assert torch.equal(k1, k2)
    torch.testing.assert_close(o1, o2, atol=1e-6, rtol=0)
    torch.testing.assert_close(gx1, gx2, atol=1e-6, rtol=0)
    assert g1.keys() == g2.keys() and "router.gate.weight" in g1
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-6, rtol=0, msg=name)


def test_gradients_reach_the_router_through_the_gates_alone():
    layer = _layer(E=4, k=2, balance_loss_coef=0.0, router_z_loss_coef=0.0)
    layer(torch.randn(10, 8)).pow(2).sum().backward()  # no auxiliary loss involved
    assert layer.router.gate.weight.grad.abs().sum() > 0


def test_shared_experts_are_added_to_the_routed_output():
    layer = _layer(E=4, k=1, n_shared_experts=2)
    assert layer.shared_experts.up_proj.weight.shape == (2 * 16, 8)
    x = torch.randn(6, 8)
    routed_only = MoEFeedForward(8, 16, 4, 1, "swiglu", bias=False)
    routed_only.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("shared")})
    torch.testing.assert_close(layer(x), routed_only(x) + layer.shared_experts(x))
    # one shared FFN of width 2F = two shared experts of width F, summed
    halves = [FeedForward(8, 16, "swiglu", bias=False) for _ in range(2)]
    sd = layer.shared_experts.state_dict()
    for i, h in enumerate(halves):
        h.load_state_dict({
            "gate_proj.weight": sd["gate_proj.weight"][16 * i : 16 * (i + 1)],
            "up_proj.weight": sd["up_proj.weight"][16 * i : 16 * (i + 1)],
            "down_proj.weight": sd["down_proj.weight"][:, 16 * i : 16 * (i + 1)],
        })
    torch.testing.assert_close(layer.shared_experts(x), halves[0](x) + halves[1](x))


def test_bad_options_raise_naming_the_field():
    with pytest.raises(ValueError, match="moe_dispatch"):
        _layer(dispatch="fast")
    with pytest.raises(ValueError, match="capacity_scope"):
        _layer(capacity_scope="row")
    with pytest.raises(ValueError, match="top_k"):
        MoEFeedForward(8, 16, 2, 3)
    with pytest.raises(ValueError, match="n_shared_experts"):
        _layer(n_shared_experts=-1)
    with pytest.raises(ValueError, match="balance_loss_coef"):
        _layer(balance_loss_coef=float("nan"))
    with pytest.raises(ValueError, match="n_experts"):
        MoEFeedForward.from_config(ModelConfig())
    # the list: top_k > n_experts and a non-positive capacity factor, in the config and in the layer
    with pytest.raises(ValueError, match="top_k=5 must be between 1 and n_experts=4"):
        ModelConfig(n_experts=4, top_k=5)
    for bad in (0, 0.0, -1.25, float("nan")):
        with pytest.raises(ValueError, match="capacity_factor="):
            ModelConfig(n_experts=4, capacity_factor=bad)
        with pytest.raises(ValueError, match="capacity_factor="):
            _layer(capacity_factor=bad)


# --- in the models -----------------------------------------------------------------------
def _moe_config(**kw) -> ModelConfig:
    base = dict(vocab_size=40, d_model=16, n_heads=2, n_layers=2, max_seq_len=16, n_experts=4, top_k=2,
                capacity_factor=1.25, ffn="swiglu", d_ff=24)
    return ModelConfig(**{**base, **kw})


def test_moe_every_and_offset_choose_the_layers():
    model = build_model(_moe_config(n_layers=5, moe_every=2, moe_offset=1), seed=0)
    kinds = [type(b.ffn).__name__ for b in model.decoder.blocks]
    assert kinds == ["FeedForward", "MoEFeedForward", "FeedForward", "MoEFeedForward", "FeedForward"]
    model = build_model(_moe_config(n_layers=3), seed=0)
    assert [type(b.ffn).__name__ for b in model.decoder.blocks] == ["MoEFeedForward"] * 3
    layer = moe_layers(model)[0]
    assert layer.experts[0].up_proj.weight.shape == (24, 16)
    assert build_model(_moe_config(expert_d_ff=8), seed=0).decoder.blocks[0].ffn.experts[0].up_proj.weight.shape == (8, 16)


def test_router_gets_the_plain_normal_init():
    model = build_model(_moe_config(init_std=0.02), seed=0)
    w = moe_layers(model)[0].router.gate.weight
    assert 0.015 < w.std().item() < 0.025


def test_parameter_counts_exact():
    cfg = _moe_config(n_layers=4, moe_every=2, n_shared_experts=1, bias=False, router_bias=True)
    model = build_model(cfg, seed=0)
    total, active = count_moe_parameters(model)
    assert total == count_parameters(model)
    expert = ffn_param_count(16, 24, "swiglu")
    # two MoE layers (0 and 2), each with 4 routed experts of which 2 are active
    assert total - active == 2 * (4 - 2) * expert
    dense = build_model(cfg.replace(n_experts=0), seed=0)
    router = 16 * 4 + 4
    shared = ffn_param_count(16, 24, "swiglu")
    assert total == count_parameters(dense) + 2 * (4 * expert + router + shared - expert)
    assert active == count_parameters(dense) + 2 * (2 * expert + router + shared - expert)
    assert count_moe_parameters(dense) == (count_parameters(dense),) * 2


@pytest.mark.parametrize("arch, mask", [("decoder", "causal"), ("decoder", "prefix"), ("encoder_decoder", "causal")])
def test_moe_models_train_with_the_balance_loss(arch, mask):
    cfg = _moe_config(arch=arch, mask=mask, n_layers=2)
    model = build_model(cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (2, 12), generator=g)
    batch = {"input_ids": ids, "targets": torch.randint(0, 40, (2, 12), generator=g)}
    if arch == "encoder_decoder":
        batch["decoder_input_ids"] = ids
    if mask == "prefix":
        batch["prefix_len"] = 4
    with auxiliary.collect() as aux:
        loss = lm_loss(model, batch)
    n_moe = len(moe_layers(model))
    assert n_moe == (4 if arch == "encoder_decoder" else 2)
    assert set(aux.losses) == {"moe.balance", "moe.z_loss"}
    # summed over layers: between coef (balanced) and E * coef per layer
    assert n_moe * 0.01 - 1e-6 <= aux.losses["moe.balance"].item() <= n_moe * 0.04
    total = loss + aux.total()
    assert total.item() > loss.item()
    total.backward()
    for layer in moe_layers(model):
        assert layer.router.gate.weight.grad.abs().sum() > 0
    assert sum(aux.stats["moe.load"]) == pytest.approx(1.0)
    # outside collect the model runs as usual and reports nothing
    assert lm_loss(model, batch).item() == pytest.approx(loss.item())


def test_moe_decoder_cached_decoding_equals_full_forward_without_capacity():
    model = build_model(_moe_config(capacity_factor=None, position="rope"), seed=0).eval()
    ids = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        steps = [model(ids[:, :4], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


# --- the benchmark ---------------------------------------------------------------------------
def test_moe_benchmark_quick_mode_reports_ratios_and_linear_memory(capsys):
    from llmcourse.benchmarks.__main__ import main

    assert main(["moe", "--quick", "--tokens", "512"]) == 0  # memory at 1k, 2k, 4k tokens
    out = capsys.readouterr().out
    ratios = out.split("time ratios (same run)")[1].splitlines()[1:4]
    names = [line.rsplit(None, 1)[0] if "goal" not in line else line.split("   (goal")[0].rsplit(None, 1)[0]
             for line in ratios]
    assert names == ["sorted / dense", "reference / dense", "sorted / reference"]
    assert all(float(line.split()[3]) > 0 for line in ratios)
    params = out.split("parameters (total, active per token)")[1].splitlines()[1:4]
    counts = {line.split()[0]: [int(v.replace(",", "")) for v in line.split()[1:]] for line in params}
    # the dense layer has the MoE layer's active parameters less its router (D x E)
    assert counts["sorted"][1] - counts["dense"][1] == 256 * 8 and counts["sorted"] == counts["reference"]
    memory = out.split("peak tensor memory of one step (MiB)")[1].splitlines()[2:5]
    exponents = {line.split()[0]: float(line.split()[-2]) for line in memory}
    assert set(exponents) == {"dense", "sorted", "reference"}
    assert all(abs(p - 1.0) < 0.15 for p in exponents.values())  # memory linear in tokens


def test_trainer_trains_the_router_with_the_balance_loss(tokenizer, token_ids):
    from llmcourse import LMBatches, TrainConfig, Trainer

    def run(coef: float):
        cfg = _moe_config(vocab_size=tokenizer.vocab_size, d_model=32, n_heads=4, max_seq_len=32, d_ff=32, top_k=1,
                          capacity_factor=1.0, router_bias=True, balance_loss_coef=coef)
        model = build_model(cfg, seed=0)
        for layer in moe_layers(model):  # a collapsed router: every token to expert 0, 3/4 of them dropped
            with torch.no_grad():
                layer.router.gate.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0]))
        tc = TrainConfig(steps=20, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=100, eval_batches=1, progress=False)
        return Trainer(model, tc, LMBatches(token_ids, 4, 32), LMBatches(token_ids, 4, 32)).train()

    without, with_balance = run(0.0), run(1.0)
    assert with_balance.stats["moe.load"][0] == [1.0, 0.0, 0.0, 0.0] and with_balance.stats["moe.dropped"][0] == 0.75
    assert "moe.balance" not in without.aux_losses and len(with_balance.aux_losses["moe.balance"]) == 20
    assert without.stats["moe.dropped"][-1] == 0.75  # the language-modelling loss alone leaves it collapsed
    assert with_balance.stats["moe.dropped"][-1] < 0.65  # the balance loss spreads the tokens


def test_a_config_with_experts_but_no_moe_layer_is_refused():
    """n_experts > 0 with moe_offset past the last layer built a dense model without a word."""
    with pytest.raises(ValueError, match=r"n_experts=4, but no layer would get experts.*moe_offset=2.*2 layer"):
        _moe_config(n_layers=2, moe_offset=2)
    with pytest.raises(ValueError, match="no layer would get experts"):
        _moe_config(n_layers=2).replace(moe_offset=5)
    assert _moe_config(n_layers=2, moe_offset=1).is_moe_layer(1)
    encoder_deep = _moe_config(arch="encoder_decoder", n_layers=1, n_encoder_layers=3, moe_offset=2)
    assert encoder_deep.is_moe_layer(2)  # only the encoder reaches layer 2: still an MoE model
