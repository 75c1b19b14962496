"""The networks follow the paper: shapes, parameter counts, activations, options."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from began.models import Decoder, Discriminator, Generator, ModelConfig, build


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("res", [16, 32, 64, 128])
def test_shapes_every_resolution(res):
    cfg = ModelConfig(resolution=res, n=4, z_dim=5, h_dim=7)
    G, D = build(cfg)
    z = torch.rand(3, 5) * 2 - 1
    x = G(z)
    assert x.shape == (3, 3, res, res)
    assert D.encode(x).shape == (3, 7)
    assert D(x).shape == (3, 3, res, res)
    # Every net ends at 8x8: the encoder's FC reads S*n channels of 8x8.
    assert D.encoder.fc.in_features == 8 * 8 * cfg.n_scales * 4
    assert G.fc.out_features == 8 * 8 * 4


def test_parameter_counts_by_hand_32():
    # R=32, n=8, N_z=N_h=4, repeat=2 -> scales 32, 16, 8 (S=3).
    # G:  fc 4*(8*8*8) + 512 = 2560; 3 stacks of 2 convs 8->8: 3*2*(9*8*8+8) = 3504;
    #     out conv 8->3: 9*8*3+3 = 219                                   => 6283
    # Enc: stem 3->8: 9*3*8+8 = 224; stacks 8,16,24: 2*(576+8) + 2*(2304+16) + 2*(5184+24)
    #     = 16224; downs 8->16, 16->24: (1152+16) + (3456+24) = 4648;
    #     fc (8*8*24)*4 + 4 = 6148                                       => 27244
    # Dec (N_h=4) has G's shape                                          => 6283
    G, D = build(ModelConfig(resolution=32, n=8, z_dim=4, h_dim=4))
    assert n_params(G) == 6283
    assert n_params(D.encoder) == 27244
    assert n_params(D.decoder) == 6283
    assert n_params(D) == 33527


def test_parameter_counts_by_hand_skip():
    # With skip connections, the first conv after each of the 2 upsamplings reads 2n = 16
    # channels: 9*16*8+8 = 1160 instead of 584, twice: 6283 + 2*(1160-584) = 7435.
    G, _ = build(ModelConfig(resolution=32, n=8, z_dim=4, h_dim=4, skip=True))
    assert n_params(G) == 7435


def test_parameter_counts_paper64():
    # The paper's 64x64 model (n=64, N_z=N_h=64), S=4 scales 64, 32, 16, 8.
    # G:  fc 64*4096+4096 = 266240; 4 stacks: 4*2*(9*64*64+64) = 295424; out 9*64*3+3 = 1731
    # Enc: stem 1792; stacks c=64,128,192,256: 73856+295168+663936+1180160 = 2213120;
    #     downs 73856+221376+442624 = 737856; fc 16384*64+64 = 1048640
    G, D = build(ModelConfig(resolution=64, n=64, z_dim=64, h_dim=64))
    assert n_params(G) == 563395
    assert n_params(D.encoder) == 4001408
    assert n_params(D) == 4001408 + 563395


def test_config_round_trip_rebuilds_same_modules():
    cfg = ModelConfig(resolution=32, n=6, z_dim=3, h_dim=5, repeat=3, skip=True,
                      vanishing_residual=True)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    G1, D1 = build(cfg)
    G2, D2 = build(again)
    G2.load_state_dict(G1.state_dict())  # strict: same names and shapes
    D2.load_state_dict(D1.state_dict())
    z = torch.rand(2, 3)
    assert torch.equal(G1(z), G2(z))


@pytest.mark.parametrize("bad", [dict(resolution=48), dict(resolution=8), dict(n=0),
                                 dict(z_dim=-1), dict(repeat=0), dict(skip="yes")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"resolution": 32, "dropout": 0.1})


ACTIVATIONS = {F.elu, F.relu, F.leaky_relu, torch.tanh, torch.sigmoid, F.gelu, F.silu}


@pytest.mark.parametrize("skip,residual", [(False, False), (True, False), (True, True)])
def test_activations_exactly_where_the_paper_has_them(skip, residual):
    cfg = ModelConfig(resolution=32, n=4, z_dim=3, h_dim=3, skip=skip,
                      vanishing_residual=residual)
    G, D = build(cfg)
    for net in (G, D.encoder, D.decoder):
        gm = fx.symbolic_trace(net)
        mods = dict(gm.named_modules())
        convs = [n for n in gm.graph.nodes
                 if n.op == "call_module" and isinstance(mods[n.target], nn.Conv2d)]
        linears = [n for n in gm.graph.nodes
                   if n.op == "call_module" and isinstance(mods[n.target], nn.Linear)]
        assert len(linears) == 1
        # The FC layers are linear: nothing they feed is an activation.
        assert not any(u.target in ACTIVATIONS for u in linears[0].users)
        for c in convs:
            users = list(c.users)
            if c.target == "out":  # the image output is linear
                assert all(u.target not in ACTIVATIONS for u in users)
            else:  # every other 3x3 conv is followed by an ELU and nothing else
                assert [u.target for u in users] == [F.elu], c.target
        # No activation other than ELU anywhere.
        fns = {n.target for n in gm.graph.nodes if n.op == "call_function"}
        assert fns & ACTIVATIONS <= {F.elu}


def test_linear_layers_pass_negative_values_through():
    # ELU would floor at -1, ReLU at 0, tanh at -1: a linear layer gives exactly -3.
    cfg = ModelConfig(resolution=16, n=4, z_dim=3, h_dim=3)
    G, D = build(cfg)
    with torch.no_grad():
        D.encoder.fc.weight.zero_(), D.encoder.fc.bias.fill_(-3.0)
        G.out.weight.zero_(), G.out.bias.fill_(-3.0)
        G.fc.weight.zero_(), G.fc.bias.fill_(-3.0)
    seen = {}
    G.stacks[0].convs[0].register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0]))
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(D.encode(x), torch.full((2, 3), -3.0))
    assert torch.equal(G(torch.rand(2, 3)), torch.full((2, 3, 16, 16), -3.0))
    assert torch.equal(seen["in"], torch.full((2, 4, 8, 8), -3.0))


def test_skip_connections_concatenate_upsampled_h0():
    cfg = ModelConfig(resolution=32, n=4, z_dim=3, h_dim=3, skip=True)
    G = Generator(cfg)
    seen = []
    for stack in G.stacks[1:]:
        stack.convs[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    z = torch.rand(2, 3)
    G(z)
    h0 = G.fc(z).view(2, 4, 8, 8)
    assert [t.shape for t in seen] == [(2, 8, 16, 16), (2, 8, 32, 32)]
    assert torch.allclose(seen[0][:, 4:], h0.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert torch.allclose(seen[1][:, 4:], h0.repeat_interleave(4, 2).repeat_interleave(4, 3))


def test_vanishing_residuals_carry_one_is_identity_and_zero_is_plain():
    cfg = ModelConfig(resolution=16, n=4, z_dim=3, h_dim=3, vanishing_residual=True)
    dec = Decoder(cfg, 3)
    z = torch.rand(2, 3)
    dec.set_carry(1.0)  # every same-shaped conv layer passes its input through
    up = F.interpolate(dec.fc(z).view(2, 4, 8, 8), scale_factor=2.0, mode="nearest")
    assert torch.allclose(dec(z), dec.out(up), atol=1e-6)
    dec.set_carry(0.0)  # the plain network, same weights
    plain = Decoder(ModelConfig(resolution=16, n=4, z_dim=3, h_dim=3), 3)
    plain.load_state_dict(dec.state_dict())
    assert torch.equal(dec(z), plain(z))
    dec.set_carry(0.25)
    assert not torch.allclose(dec(z), plain(z))


def test_discriminator_is_an_autoencoder_through_h():
    cfg = ModelConfig(resolution=16, n=4, z_dim=3, h_dim=6)
    D = Discriminator(cfg)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(D(x), D.decode(D.encode(x)))


def test_out_tanh_bounds_g_and_d_and_adds_no_parameters():
    plain = ModelConfig(resolution=16, n=4, z_dim=3, h_dim=3)
    tanh = ModelConfig(resolution=16, n=4, z_dim=3, h_dim=3, out_tanh=True)
    G0, D0 = build(plain)
    G1, D1 = build(tanh)
    assert (n_params(G1), n_params(D1)) == (n_params(G0), n_params(D0))
    G1.load_state_dict(G0.state_dict())  # strict: the same names and shapes
    D1.load_state_dict(D0.state_dict())
    with torch.no_grad():  # push the linear outputs far outside [-1, 1]
        for net in (G0.out, D0.decoder.out):
            net.bias.fill_(4.0)
        G1.load_state_dict(G0.state_dict()), D1.load_state_dict(D0.state_dict())
    z, x = torch.rand(5, 3) * 2 - 1, torch.rand(5, 3, 16, 16) * 2 - 1
    assert G0(z).max() > 1 and D0(x).max() > 1
    assert torch.equal(G1(z), torch.tanh(G0(z)))
    assert torch.equal(D1(x), torch.tanh(D0(x)))
    assert G1(z).abs().max() <= 1 and D1(x).abs().max() <= 1
    # The encoder is untouched: only the image outputs get the tanh.
    assert torch.equal(D1.encode(x), D0.encode(x))


def test_out_tanh_is_the_only_added_activation():
    G, D = build(ModelConfig(resolution=16, n=4, z_dim=3, h_dim=3, out_tanh=True))
    for net in (G, D.decoder):
        gm = fx.symbolic_trace(net)
        out = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == "out"][0]
        assert [u.target for u in out.users] == [torch.tanh]
        assert [n for n in gm.graph.nodes if n.op == "output"][0].args[0] is list(out.users)[0]
