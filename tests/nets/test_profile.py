from medseg.nets.profile import model_figures


def test_figures_count_params_and_flops():
    fig = model_figures("transunet3d_tiny", size=64)
    assert 0.1 < fig["params_m"] < 1.0
    assert fig["gflops"] > 1.0
    assert model_figures("transunet3d_tiny", size=128)["gflops"] > 7 * fig["gflops"]
