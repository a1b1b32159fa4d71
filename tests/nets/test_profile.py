from medseg.nets.profile import model_figures


def test_figures_count_params_and_flops():
    fig = model_figures("transunet3d_tiny", size=64)
    assert 0.1 < fig["params_m"] < 1.0
    assert fig["gflops"] > 1.0
    assert model_figures("transunet3d_tiny", size=128)["gflops"] > 7 * fig["gflops"]


def test_bundle_figures_count_the_pruned_network():
    import torch

    from medseg.nets import create_model
    from medseg.nets.profile import bundle_figures
    from medseg.nets.pruning import prune_channels, structure_of
    from tests.conftest import make_bundle

    bundle = make_bundle(cross_modal=False)
    full = bundle_figures(bundle, size=32)
    model = bundle.build_model()
    pruned = prune_channels(model, torch.randn(1, 4, 32, 32, 32), 0.5)
    bundle.structure = structure_of(pruned, create_model(bundle.model_name, **bundle.model_kwargs))
    bundle.state_dict = pruned.state_dict()
    small = bundle_figures(bundle, size=32)
    assert small["params_m"] < full["params_m"] and small["gflops"] < 0.6 * full["gflops"]


def test_a_size_the_network_refuses_has_no_gflops_and_says_why():
    """`medseg models list --size 32` crashed on SwinUNETR (needs 64) and on sizes off a model's stride."""
    small = model_figures("swinunetr", size=32)
    assert small["gflops"] is None and small["refused"] == "spatial sizes of at least 64" and small["params_m"] > 1
    assert "multiples of" in model_figures("transunet3d_tiny", size=40)["refused"]
    assert model_figures("transunet3d_tiny", size=64)["refused"] is None
