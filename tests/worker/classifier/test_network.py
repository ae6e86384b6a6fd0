"""The layers inside the network: colour constancy, standardisation and the centre field."""


import numpy as np
import pytest


@pytest.mark.parametrize("exponent", [1, 2, 3, 6, 7, 6.5])
def test_colour_constancy_power_matches_numpy(exponent):
    from worker.classifier.network import _power

    values = np.array([0.0, 1e-6, 0.3, 0.999, 1.7], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(_power(values, exponent)), values ** exponent, rtol=1e-5, atol=1e-30)


def test_channel_standardisation_removes_another_devices_gain_and_offset():
    from worker.classifier.network import ChannelStandardisation

    rng = np.random.default_rng(4)
    image = rng.uniform(0.2, 0.6, (1, 32, 32, 3)).astype(np.float32)
    other_device = image * np.array([0.7, 1.1, 0.9], np.float32) + np.array([0.1, -0.05, 0.2], np.float32)
    layer = ChannelStandardisation()
    np.testing.assert_allclose(np.asarray(layer(other_device)), np.asarray(layer(image)), atol=2e-3)
    out = np.asarray(layer(image))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.5, atol=0.01)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_field_standardisation_ignores_a_dermatoscopes_black_rim():
    from worker.classifier.network import ChannelStandardisation

    rng = np.random.default_rng(5)
    image = rng.uniform(0.3, 0.8, (1, 48, 48, 3)).astype(np.float32)
    y, x = np.mgrid[0:48, 0:48]
    inside = np.hypot(y - 23.5, x - 23.5) <= 24
    rimmed = np.where(inside[None, ..., None], image, 0.0).astype(np.float32)
    greyer_rim = np.where(inside[None, ..., None], image, 0.05).astype(np.float32)
    field = ChannelStandardisation.from_config(ChannelStandardisation(field_only=True).get_config())
    assert field.field_only and not ChannelStandardisation.from_config(ChannelStandardisation().get_config()).field_only
    pixels = image[0][inside]
    expected = np.clip(0.5 + (pixels - pixels.mean(axis=0)) / (4 * pixels.std(axis=0) + 1e-3), 0, 1)
    np.testing.assert_allclose(np.asarray(field(rimmed))[0][inside], expected, atol=2e-3)
    np.testing.assert_allclose(np.asarray(field(greyer_rim))[0][inside], expected, atol=2e-3)
    # Without field_only the rim drags the mean down and the spread up, and the lesion comes out changed.
    whole = np.asarray(ChannelStandardisation()(rimmed))[0][inside]
    assert np.abs(whole - expected).mean() > 0.05
    np.testing.assert_array_equal(np.asarray(field(rimmed))[0][~inside], 0.5)  # the rim reads as plain skin
    # A black lesion in the centre stays black; a picture that is all dark still comes out finite.
    lesion = image.copy()
    lesion[0, 20:28, 20:28] = 0.0
    assert np.asarray(field(lesion))[0, 20:28, 20:28].max() == 0.0
    assert np.isfinite(np.asarray(field(image * 0.05))).all()


def test_the_centre_field_keeps_the_middle_of_any_picture():
    from worker.classifier.network import CentreField

    pictures = np.arange(2 * 40 * 50 * 3, dtype=np.float32).reshape(2, 40, 50, 3)
    layer = CentreField.from_config(CentreField(0.8).get_config())
    np.testing.assert_array_equal(np.asarray(layer(pictures)), pictures[:, 4:36, 5:45])


def test_a_network_with_a_field_never_reads_the_border_and_keeps_the_backbones_input():
    import keras

    from worker.classifier.network import make_model

    lite = make_model(input_size=226, backbone="efficientnet_lite0", field=0.85)
    assert lite.get_layer("efficientnet_lite0").input.shape[1:3] == (192, 192)
    # The pooled features of an untrained network (a new head starts at zero and says 1/9 for any picture).
    network = make_model(input_size=226, backbone="small", field=0.85)
    model = keras.Model(network.inputs, network.get_layer("dropout").input)
    rng = np.random.default_rng(6)
    picture = rng.uniform(0, 255, (1, 226, 226, 3)).astype(np.float32)
    other_border, other_centre = picture.copy(), picture.copy()
    other_border[:, :16] = 0.0  # a ruler across the top, inside the 17 pixels cropped away
    other_centre[:, 100:120, 100:120] = 0.0  # a dark dot in the lesion
    before, border, centre = (model.predict(x, verbose=0) for x in (picture, other_border, other_centre))
    np.testing.assert_allclose(border, before, rtol=1e-6)
    assert not np.allclose(centre, before, rtol=1e-3)
    with pytest.raises(ValueError, match="field"):
        make_model(input_size=64, field=1.5)
