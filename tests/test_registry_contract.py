"""One contract for every registered model, at tiny size (as timm's test_models loops over list_models()).

For each builder in the registry and each input stream set its config accepts: forward on a padded batch,
backward through the CTC loss (auxiliary heads included), every parameter gets a finite gradient, the output
lengths are the model's own `output_length`, and nothing is NaN. Sizes are shrunk through the config's own
fields, never by name.

Run: `pytest tests/test_registry_contract.py -q`
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cslr.models.registry import CONFIGS, ModelConfig, build_model, list_models
from cslr.models.checkpoint import build_model as build_from_config
from cslr.trainer.losses import teacher_loss

V = 7
# The smallest sizes each config allows (fields that exist in it are shrunk; the rest keep the preset's values).
TINY = dict(width_mult=0.125, pose_hidden=8, fusion_dim=16, lstm_hidden=8, temporal_hidden=16)


def cases():
    for name in list_models():
        fields = {f.name: f for f in dataclasses.fields(CONFIGS[name])}
        modalities = {"rgb", "pose", "rgb+pose"}
        # the config's own check decides which stream sets it takes
        for modality in sorted(modalities):
            try:
                CONFIGS[name](num_classes=V, modality=modality)
            except ValueError:
                continue
            yield name, modality, {k: v for k, v in TINY.items() if k in fields}


CASES = list(cases())


def test_every_registered_model_is_covered():
    assert {name for name, _, _ in CASES} == set(list_models())


@pytest.mark.parametrize("name,modality,tiny", CASES, ids=[f"{n}-{m}" for n, m, _ in CASES])
def test_contract(name, modality, tiny):
    torch.manual_seed(0)
    model = build_model(name, V, modality=modality, dropout=0.0, **tiny).train()
    streams = model.cfg.streams
    assert set(streams) == set(modality.split("+"))
    B, T, S = 2, 9, 32
    lengths = torch.tensor([T, 5])
    rgb = torch.randint(0, 256, (B, T, 3, S, S), dtype=torch.uint8) if "rgb" in streams else None
    pose = torch.rand(B, T, 543, 3) if "pose" in streams else None
    out = model(rgb=rgb, pose=pose, lengths=lengths)
    lp = out["log_probs"]
    assert lp.shape[0] == B and lp.shape[2] == V and lp.dtype == torch.float32
    assert out["lengths"].tolist() == model.output_length(lengths).tolist()
    assert lp.shape[1] == int(out["lengths"].max())
    assert torch.isfinite(lp).all()
    batch = {"targets": torch.tensor([[1, 2], [3, 0]]), "target_lengths": torch.tensor([2, 1])}
    loss, parts = teacher_loss(out, batch, aux_weight=0.5)
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"{name} ({modality}): parameters without a gradient: {no_grad[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name} ({modality}): non-finite gradients: {bad[:5]}"


@pytest.mark.parametrize("name", list_models())
def test_aux_weight_zero_builds_no_aux_heads(name):
    """What the run config says is what the model has: aux_weight 0 -> no auxiliary heads (DDP needs every
    parameter to get a gradient), whatever the architecture."""
    modality = next(m for n, m, _ in CASES if n == name)
    model, meta = build_from_config(ModelConfig(arch=name, modality=modality, aux_weight=0.0), V)
    assert len(model.aux_heads) == 0 and meta["model_kwargs"]["aux_heads"] is False
