"""Tensor parallelism (``llmcourse.distributed.tensor_parallel``) on 2 gloo processes equals one process."""

import json

import pytest
import torch
from gloo_ranks import run_two_ranks

from llmcourse import build_model
from llmcourse.distributed import tensor_parallel

_TP_WORKER = r"""
from llmcourse import build_model
from llmcourse.config import ModelConfig
from llmcourse.distributed import tensor_parallel
from llmcourse.objectives import lm_loss

for name, fields in json.loads(sys.argv[4]).items():
    config = ModelConfig.from_dict(fields)
    ids = torch.randint(0, config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}
    ids = ids[:, :-1]
    one = build_model(config, seed=0)  # every rank builds the same model, then splits it
    tp = tensor_parallel(build_model(config, seed=0))
    attn = tp.decoder.blocks[0].attn
    loss_one, loss_tp = lm_loss(one, batch), lm_loss(tp, batch)
    loss_one.backward()
    loss_tp.backward()
    grad_one = one.decoder.blocks[0].ffn.up_proj.weight.grad
    grad_tp = tp.decoder.blocks[0].ffn.up_proj.weight.grad.full_tensor()  # gather the two column slices
    local = tp.decoder.blocks[0].ffn.up_proj.weight.to_local()
    results[name] = {
        "logits": (one(ids) - tp(ids)).abs().max().item(),
        "loss": abs(loss_one.item() - loss_tp.item()),
        "grad": (grad_one - grad_tp).abs().max().item(),
        "embed_grad": (one.tok_emb.weight.grad - tp.tok_emb.weight.grad).abs().max().item(),
        "local_heads": attn.n_heads,
        "local_rows": local.shape[0],
    }
"""

CONFIGS = {
    "gpt": dict(vocab_size=40, d_model=32, n_heads=4, n_layers=2, max_seq_len=16),
    "llama": dict(vocab_size=40, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, max_seq_len=16, norm="rmsnorm",
                  ffn="swiglu", position="rope", bias=False, attn_impl="sdpa", tie_embeddings=False),
}


def test_two_tensor_parallel_ranks_give_the_logits_and_gradients_of_one_process(tmp_path):
    for results in run_two_ranks(_TP_WORKER, tmp_path, json.dumps(CONFIGS)):
        for name, r in results.items():
            assert r["local_heads"] == 2 and r["local_rows"] == 64, (name, r)  # half the heads, half of d_ff
            for key in ("logits", "loss", "grad", "embed_grad"):
                assert r[key] < 1e-5, (name, key, r[key])


@pytest.mark.parametrize("fields,message", [({"n_experts": 4}, "expert parallelism"), ({"position": "alibi"}, "one value per head")])
def test_tensor_parallel_refuses_what_it_cannot_split(tiny_config, fields, message):
    with pytest.raises(ValueError, match=message):
        tensor_parallel(build_model(tiny_config.replace(**fields), seed=0), mesh=object())
