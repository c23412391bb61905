import keras
import pytest


@pytest.fixture(scope="package")
def trained_cnn():
    """tfpriors.models.small_cnn trained 3 epochs on digits, with the digits splits."""
    import tfpriors

    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    keras.utils.set_random_seed(0)
    model = tfpriors.models.small_cnn((8, 8, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    return model, x, y, x_test, y_test
