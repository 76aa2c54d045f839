"""Expert parallelism (``llmcourse.distributed.expert_parallel``) on 2 gloo processes equals one process."""

import json

import pytest
import torch
from gloo_ranks import run_two_ranks

from llmcourse import build_model
from llmcourse.distributed import expert_parallel

_EP_WORKER = r"""
from llmcourse import build_model
from llmcourse.config import ModelConfig
from llmcourse.distributed import expert_parallel, sync_expert_parallel_grads
from llmcourse.moe import moe_layers
from llmcourse.objectives import lm_loss

for name, fields in json.loads(sys.argv[4]).items():
    config = ModelConfig.from_dict(fields)
    ids = torch.randint(0, config.vocab_size, (4, 17), generator=torch.Generator().manual_seed(1))
    shards = [{"input_ids": ids[2 * r:2 * r + 2, :-1], "targets": ids[2 * r:2 * r + 2, 1:]} for r in (0, 1)]
    one = build_model(config, seed=0)  # one process: the mean of the two shards' losses
    loss_one = sum(lm_loss(one, shard) for shard in shards) / 2
    loss_one.backward()
    ep = expert_parallel(build_model(config, seed=0))  # every rank builds the same model, then splits it
    mine = shards[rank]
    logits = (one(mine["input_ids"]) - ep(mine["input_ids"])).abs().max().item()
    lm_loss(ep, mine).backward()
    sync_expert_parallel_grads(ep)
    grads = {}
    for l_one, l_ep in zip(moe_layers(one), moe_layers(ep)):
        local = list(l_one.experts)[l_ep.first_expert:l_ep.first_expert + len(l_ep.experts)]
        for a, b in zip(local, l_ep.experts):
            for pa, pb in zip(a.parameters(), b.parameters()):
                grads.setdefault("experts", []).append((pa.grad - pb.grad).abs().max().item())
        grads.setdefault("router", []).append((l_one.router.gate.weight.grad - l_ep.router.gate.weight.grad).abs().max().item())
    grads["embed"] = [(one.tok_emb.weight.grad - ep.tok_emb.weight.grad).abs().max().item()]
    results[name] = {"logits": logits, "local_experts": len(moe_layers(ep)[0].experts),
                     **{k: max(v) for k, v in grads.items()}}
"""

BASE = dict(vocab_size=40, d_model=32, n_heads=4, n_layers=2, max_seq_len=16, n_experts=4)
CONFIGS = {
    "switch_dropping": dict(BASE, top_k=1, capacity_factor=0.75),  # capacity small enough to drop tokens
    "top2_no_capacity": dict(BASE, top_k=2, norm="rmsnorm", ffn="swiglu", position="rope", bias=False),
    "top2_every_other_shared": dict(BASE, top_k=2, capacity_factor=1.0, moe_every=2, n_shared_experts=1),
}


def test_two_expert_parallel_ranks_give_the_logits_and_gradients_of_one_process(tmp_path):
    for results in run_two_ranks(_EP_WORKER, tmp_path, json.dumps(CONFIGS)):
        assert set(results) == set(CONFIGS)
        for name, r in results.items():
            assert r["local_experts"] == 2, (name, r)  # half of the 4 experts on each rank
            for key in ("logits", "experts", "router", "embed"):
                assert r[key] < 1e-5, (name, key, r[key])


def test_expert_parallel_refuses_a_dense_model_and_an_indivisible_expert_count(tiny_config, monkeypatch):
    import torch.distributed as dist

    with pytest.raises(ValueError, match="has none"):
        expert_parallel(build_model(tiny_config, seed=0))
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    with pytest.raises(ValueError, match="divisible by the 2 expert-parallel ranks"):
        expert_parallel(build_model(tiny_config.replace(n_experts=3), seed=0))
