"""fastai-style equivalence: bs 8 x 1 step == bs 2 x 4 accumulated micro-batches (no BatchNorm model)."""

import torch
from fastai.data.core import DataLoaders, TfmdDL
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.optimizer import SGD
from fastai.test_utils import RegModel
from torch.utils.data import TensorDataset

from deepfake_fastai.config import TrainConfig
from deepfake_fastai.learner import accumulation_callbacks


def _weights_after_one_epoch_of_8(cfg: TrainConfig) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(8, 1)
    train = TensorDataset(x, 2 * x + 3 + 0.1 * torch.randn(8, 1))  # the same 8 samples for every cfg
    dls = DataLoaders(TfmdDL(train, bs=cfg.micro_bs, shuffle=True), TfmdDL(train, bs=8))
    torch.manual_seed(1)
    learn = Learner(dls, RegModel(), loss_func=MSELossFlat(), opt_func=SGD, lr=0.1,
                    cbs=accumulation_callbacks(cfg))
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
    return torch.cat([learn.model.a.detach(), learn.model.b.detach()])


def test_bs8_one_step_equals_bs2_times_four_accumulated():
    start = _weights_after_one_epoch_of_8(TrainConfig(bs=8, accum=1))
    accumulated = _weights_after_one_epoch_of_8(TrainConfig(bs=8, accum=4))
    assert accumulated.shape == start.shape
    torch.testing.assert_close(accumulated, start, rtol=1e-5, atol=1e-6)


def test_without_accumulation_micro_batches_step_separately():
    # The control: four plain steps of 2 do NOT give the same weights, so the test above can fail.
    one_step = _weights_after_one_epoch_of_8(TrainConfig(bs=8, accum=1))
    four_steps = _weights_after_one_epoch_of_8(TrainConfig(bs=2, accum=1))
    assert not torch.allclose(one_step, four_steps, atol=1e-4)


def test_the_fused_optimizer_makes_the_same_steps_as_fastais_adam():
    import torch
    from fastai.optimizer import Adam

    from deepfake_fastai.learner import ADAMW

    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    theirs.load_state_dict(ours.state_dict())
    opts = [ADAMW(list(ours.parameters()), lr=0.01), Adam(list(theirs.parameters()), lr=0.01)]
    for _ in range(5):  # several steps: a different second-moment decay (torch's 0.999) shows from step 2
        grads = [torch.randn_like(p) for p in ours.parameters()]
        for model, opt in zip((ours, theirs), opts, strict=True):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
            opt.zero_grad()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
