"""Networks: shapes, lazy initialisation, saving, conditioning paths, and faithfulness to the practical's U-Net."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from ddpm_hpc.config import ModelConfig
from ddpm_hpc.models import SeedUNet, UNet, build_model
from ddpm_hpc.models.embeddings import one_hot_with_null




SMALL_SEED = (8, 8, 12, 12, 16)
SMALL_UNET = (8, 16)

CONFIGS = [ModelConfig(arch="conv", conditioning="none")]
CONFIGS += [ModelConfig(arch="seed_unet", channels=SMALL_SEED, conditioning=c, time_embedding=te)
            for c, te in itertools.product(["none", "onehot", "embedding"], [False, True])]
CONFIGS += [ModelConfig(arch="unet", channels=SMALL_UNET, conditioning=c, time_embedding=te, norm=norm)
            for c, te, norm in itertools.product(["none", "onehot", "embedding"], [False, True], ["group", "batch"])]


def ident(cfg: ModelConfig) -> str:
    return f"{cfg.arch}-{cfg.conditioning}-{'t' if cfg.time_embedding else 'not'}-{cfg.norm}"


def inputs(n=3, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, channels, 32, 32), generator=g), torch.rand(n, generator=g), torch.tensor([0, 3, 9][:n])


def build(cfg: ModelConfig, image_shape=(3, 32, 32)):
    torch.manual_seed(0)
    return build_model(cfg, 10, image_shape)


def randomise_zero_parameters(model: nn.Module) -> None:
    """The modern U-Net starts every residual block as the identity (zero-initialised last conv), so at init its
    output ignores t and labels; give those weights values to see the conditioning paths."""
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_shapes_and_lazy_parameters_materialised(cfg):
    model = build(cfg)
    assert model.training  # build_model hands back a model in train mode
    for name, p in itertools.chain(model.named_parameters(), model.named_buffers()):
        assert not isinstance(p, (UninitializedParameter, UninitializedBuffer)), name
    for module in model.modules():
        has = getattr(module, "has_uninitialized_params", None)
        assert has is None or not has(), module
    x, t, labels = inputs()
    out = model(x, t, labels if cfg.conditioning != "none" else None)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().mean().backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[3], CONFIGS[-1]], ids=ident)
def test_other_image_shapes(cfg):
    """One-channel images (image_shape[0] = 1) work the same way."""
    model = build(cfg, (1, 32, 32))
    x, t, labels = inputs(channels=1)
    assert model(x, t, labels if cfg.conditioning != "none" else None).shape == (3, 1, 32, 32)


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[4], CONFIGS[-3]], ids=ident)
def test_state_dict_saves_with_safetensors(cfg, tmp_path):
    model = build(cfg)
    save_file(model.state_dict(), tmp_path / "m.safetensors")
    torch.manual_seed(1)
    fresh = build_model(cfg, 10)
    x, t, labels = inputs()
    labels = labels if cfg.conditioning != "none" else None
    fresh.eval(), model.eval()
    if cfg.arch != "conv":  # (the conv net's BatchNorm at its initial running stats may coincide)
        assert not torch.equal(fresh(x, t, labels), model(x, t, labels))
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    assert torch.equal(fresh(x, t, labels), model(x, t, labels))


def test_build_model_does_not_move_batchnorm_running_stats():
    for cfg in (CONFIGS[0], CONFIGS[1], CONFIGS[-1]):
        model = build(cfg)
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms, cfg
        for bn in norms:
            assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
            assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
            assert bn.num_batches_tracked.item() == 0


class PracticalUNet(nn.Module):
    """The practical's section 5/6 U-Net, copied as printed (with device handling removed), without the fifth
    down block that its forward() never calls; ``conditional`` adds the section-6 one-hot injections."""

    def __init__(self, out_class=3, conditional=False):
        super().__init__()
        self.conditional = conditional
        self.dconv_down1 = self.conv_block(72)
        self.dconv_down2 = self.conv_block(96)
        self.dconv_down3 = self.conv_block(128)
        self.dconv_down4 = self.conv_block(196)
        self.bottleneck = nn.LazyConv2d(256, 3, 1, 1, bias=False)
        self.dconv_up4 = self.conv_block(256, up=True)
        self.dconv_up3 = self.conv_block(196, up=True)
        self.dconv_up2 = self.conv_block(128, up=True)
        self.dconv_up1 = self.conv_block(96, up=True)
        self.conv_last = nn.LazyConv2d(out_class, 1)

    def conv_block(self, out_channels, up=False):
        ConvType = nn.LazyConvTranspose2d if up else nn.LazyConv2d
        return nn.Sequential(ConvType(out_channels, 4, 2, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x, c=None):
        start = x
        conv1 = self.dconv_down1(x)
        conv2 = self.dconv_down2(conv1)
        conv3 = self.dconv_down3(conv2)
        conv4 = self.dconv_down4(conv3)
        ch = F.one_hot(c, num_classes=10).float().view(-1, 10, 1, 1) if self.conditional else None
        x = self.bottleneck(conv4)
        x = torch.cat([x, conv4] + ([ch.repeat(1, 1, x.size(2), x.size(3))] if ch is not None else []), dim=1)
        x = self.dconv_up4(x)
        x = torch.cat([x, conv3] + ([ch.repeat(1, 1, x.size(2), x.size(3))] if ch is not None else []), dim=1)
        x = self.dconv_up3(x)
        x = torch.cat([x, conv2], dim=1)
        x = self.dconv_up2(x)
        x = torch.cat([x, conv1], dim=1)
        x = self.dconv_up1(x)
        x = torch.cat([x, start], dim=1)
        return self.conv_last(x)


@pytest.mark.parametrize("conditioning", ["none", "onehot"])
def test_seed_unet_is_the_practicals_network(conditioning):
    """Same layers, same shapes, same registration order, same function (given the same weights)."""
    ours = build(ModelConfig(arch="seed_unet", conditioning=conditioning))
    theirs = PracticalUNet(conditional=conditioning == "onehot")
    x, t, labels = inputs()
    with torch.no_grad():
        theirs(x, labels if conditioning == "onehot" else None)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert [v.shape for v in ours_sd.values()] == [v.shape for v in theirs_sd.values()]
    theirs.load_state_dict(dict(zip(theirs_sd, ours_sd.values())))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t, labels if conditioning == "onehot" else None),
                                   theirs(x, labels if conditioning == "onehot" else None))
    # four down blocks with the practical's widths; no fifth (unused, never-initialised) block
    assert len(ours.down) == 4 and [b[0].out_channels for b in ours.down] == [72, 96, 128, 196]
    assert not any("5" in name or "down5" in name for name, _ in ours.named_modules())
    assert ours.bottleneck.out_channels == 256
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in theirs.parameters())


def test_seed_unet_under_bf16_autocast_keeps_the_practicals_result_without_fp32_round_trips():
    """The practical concatenates the fp32 input with the bf16 activations before conv_last, which promotes them to
    fp32 and autocast casts back; ours casts the input instead: bitwise the same output, and conv_last sees bf16."""
    ours = build(ModelConfig(arch="seed_unet")).eval()
    theirs = PracticalUNet(conditional=False)
    x, t, _ = inputs()
    with torch.no_grad():
        theirs(x)
    theirs.load_state_dict(dict(zip(theirs.state_dict(), ours.state_dict().values())))
    theirs.eval()
    seen = []
    ours.conv_last.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ours(x, t), theirs(x))
    assert seen == [torch.bfloat16]


def test_seed_unet_ignores_t_without_time_embedding_and_uses_it_with():
    x, t, _ = inputs()
    plain = build(ModelConfig(arch="seed_unet", channels=SMALL_SEED)).eval()
    assert torch.equal(plain(x, t, None), plain(x, 1 - t, None))
    timed = build(ModelConfig(arch="seed_unet", channels=SMALL_SEED, time_embedding=True)).eval()
    assert not torch.allclose(timed(x, t, None), timed(x, 1 - t, None))


CONDITIONAL = [c for c in CONFIGS if c.conditioning != "none"]


@pytest.mark.parametrize("cfg", CONDITIONAL, ids=ident)
def test_conditional_output_depends_on_labels_and_null_class_works(cfg):
    model = build(cfg)
    randomise_zero_parameters(model)
    model.eval()
    x, t, _ = inputs()
    with torch.no_grad():
        a = model(x, t, torch.tensor([0, 0, 0]))
        b = model(x, t, torch.tensor([1, 1, 1]))
        null = model(x, t, torch.tensor([10, 10, 10]))  # label == num_classes: the classifier-free null class
    assert not torch.allclose(a, b)
    assert torch.isfinite(null).all() and not torch.allclose(null, a)
    with pytest.raises((IndexError, RuntimeError)):
        model(x, t, torch.tensor([11, 0, 0]))  # beyond the null class is an error, not silently wrapped


def test_one_hot_code_of_the_null_class_is_zero():
    code = one_hot_with_null(torch.tensor([0, 9, 10]), 10)
    assert code.shape == (3, 10)
    assert code[0, 0] == 1 and code[1, 9] == 1 and code.sum(dim=1).tolist() == [1.0, 1.0, 0.0]


def test_unconditional_models_ignore_labels():
    for cfg in (CONFIGS[0], CONFIGS[1], CONFIGS[7]):
        model = build(cfg).eval()
        x, t, _ = inputs()
        assert torch.equal(model(x, t, None), model(x, t, torch.tensor([1, 2, 3])))


def test_unet_time_embedding_switch():
    x, t, _ = inputs()
    on = build(ModelConfig(arch="unet", channels=SMALL_UNET, time_embedding=True, norm="group"))
    randomise_zero_parameters(on)
    on.eval()
    assert not torch.allclose(on(x, t, None), on(x, 1 - t, None))
    off = build(ModelConfig(arch="unet", channels=SMALL_UNET, time_embedding=False, norm="group"))
    randomise_zero_parameters(off)
    off.eval()
    assert torch.equal(off(x, t, None), off(x, 1 - t, None))


def test_model_classes_exported():
    assert isinstance(build(CONFIGS[1]), SeedUNet) and isinstance(build(CONFIGS[-1]), UNet)
