"""GradientClipping: the trainer's update equals a step on the clipped gradient, computed independently."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from mamba_monai.bundle import GradientClipping


def _batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(4, 3, generator=g), "label": 10 * torch.randn(4, 2, generator=g)} for _ in range(n)]


def _train(batches, max_norm, accumulation_steps: int = 1):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=batches, network=net, optimizer=optimizer,
        loss_function=torch.nn.MSELoss(), accumulation_steps=accumulation_steps, decollate=False,
        train_handlers=[GradientClipping(max_norm)],
    )
    trainer.run()
    return net, trainer


def _reference_step(batches, max_norm: float):
    """Plain SGD(lr=1) on the summed (accumulated) gradient of ``batches``, clipped by hand."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    loss = sum(torch.nn.functional.mse_loss(net(b["image"]), b["label"]) for b in batches) / len(batches)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(norm) + 1e-6))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads):
            p -= scale * g
    return net, float(norm)


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_the_step_uses_the_clipped_gradient_and_keeps_its_norm(accumulation_steps):
    batches = _batches(accumulation_steps)
    net, trainer = _train(batches, 0.5, accumulation_steps)
    ref, norm = _reference_step(batches, 0.5)
    assert norm > 5.0  # the targets are large: clipping to 0.5 changes the step a lot
    assert trainer.state.grad_norm == pytest.approx(norm, rel=1e-5)
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_norm", [None, 0])
def test_no_max_norm_leaves_the_step_alone(max_norm):
    batches = _batches(1)
    net, trainer = _train(batches, max_norm)
    ref, _ = _reference_step(batches, float("inf"))
    assert not hasattr(trainer.state, "grad_norm")
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_negative_max_norm_is_refused():
    with pytest.raises(ValueError, match="max_norm"):
        GradientClipping(-1.0)


def test_plain_tensor_prepare_batch_hands_plain_tensors_and_leaves_the_batch_its_metadata():
    from monai.data import MetaTensor

    from mamba_monai.engines import PlainTensorPrepareBatch, SynthesisPrepareBatch

    image = MetaTensor(torch.rand(2, 1, 4, 4), meta={"filename_or_obj": ["a.nii.gz", "b.nii.gz"]})
    label = MetaTensor(torch.ones(2, 1, 4, 4))
    batch = {"image": image, "label": label}
    out_image, out_label = PlainTensorPrepareBatch()(batch, torch.device("cpu"))
    assert type(out_image) is torch.Tensor and type(out_label) is torch.Tensor
    torch.testing.assert_close(out_image, image.as_tensor())
    assert isinstance(batch["image"], MetaTensor) and batch["image"].meta["filename_or_obj"] == ["a.nii.gz", "b.nii.gz"]
    # another prepare_batch wrapped: its extra arguments come back plain too; a missing label stays None
    mask = MetaTensor(torch.ones(2, 3))
    x, target, args, kwargs = PlainTensorPrepareBatch(SynthesisPrepareBatch())(
        {"image": image, "target": label, "mask": mask}, torch.device("cpu"))
    assert [type(t) for t in (x, target, *args)] == [torch.Tensor] * 3 and kwargs == {}
    assert PlainTensorPrepareBatch()({"image": image}, torch.device("cpu"))[1] is None
