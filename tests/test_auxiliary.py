"""The auxiliary channel: components report losses and statistics without changing any return type."""

import pytest
import torch
from torch import nn

from llmcourse import auxiliary
from llmcourse.config import ModelConfig
from llmcourse.models import build_model


class PenalisedFFN(nn.Module):
    """A test component: the block's FFN plus an L2 penalty on its output and a statistic."""

    def __init__(self, ffn: nn.Module, coef: float) -> None:
        super().__init__()
        self.ffn, self.coef = ffn, coef

    def forward(self, x):
        h = self.ffn(x)
        auxiliary.add_loss("test.l2", self.coef * h.pow(2).mean())
        auxiliary.add_stat("test.rms", h.pow(2).mean().sqrt())
        auxiliary.add_stat("test.vector", torch.tensor([1.0, 3.0]))
        return h


def _model(coef=1.0):
    model = build_model(ModelConfig(vocab_size=19, d_model=16, n_heads=2, n_layers=2, max_seq_len=8), seed=0)
    for block in model.decoder.blocks:
        block.ffn = PenalisedFFN(block.ffn, coef)
    return model


def test_losses_are_summed_over_layers_and_stats_averaged():
    model = _model()
    ids = torch.randint(0, 19, (2, 8))
    with auxiliary.collect() as aux:
        model(ids)
    assert set(aux.losses) == {"test.l2"}
    assert aux.losses["test.l2"].requires_grad
    outputs = []
    for block in model.decoder.blocks:
        block.ffn.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
    with torch.no_grad(), auxiliary.collect() as again:
        model(ids)
    expected = sum(h.pow(2).mean() for h in outputs)  # one report per layer, summed
    assert float(again.losses["test.l2"]) == pytest.approx(float(expected), rel=1e-6)
    rms = [h.pow(2).mean().sqrt().item() for h in outputs]
    assert again.stats["test.rms"] == pytest.approx(sum(rms) / len(rms), rel=1e-6)  # averaged over layers
    assert again.stats["test.vector"] == [1.0, 3.0]
    assert float(again.total()) == pytest.approx(float(again.losses["test.l2"]))


def test_reports_outside_collect_are_dropped_and_blocks_nest():
    model = _model()
    ids = torch.randint(0, 19, (2, 8))
    assert not auxiliary.collecting()
    model(ids)  # nothing open: nothing kept, nothing raised
    with auxiliary.collect() as outer:
        with auxiliary.collect() as inner:
            model(ids)
        assert "test.l2" in inner.losses and not outer.losses
    assert auxiliary.AuxiliaryOutputs().total() == 0.0


def test_the_auxiliary_gradient_reaches_the_parameters():
    model = _model(coef=1.0)
    ids = torch.randint(0, 19, (2, 8))
    with auxiliary.collect() as aux:
        model(ids)
    aux.total().backward()
    down = model.decoder.blocks[0].ffn.ffn.down_proj.weight
    assert down.grad is not None and down.grad.abs().sum() > 0


def test_bad_reports_are_refused():
    out = auxiliary.AuxiliaryOutputs()
    with pytest.raises(ValueError, match="scalar tensor"):
        out.add_loss("x", torch.ones(3))
    out.add_stat("s", torch.ones(2))
    with pytest.raises(ValueError, match="changed shape"):
        out.add_stat("s", torch.ones(3))
