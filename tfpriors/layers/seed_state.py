"""Noise seed-generator states saved with a layer's weights.

Keras saves a layer's variables but not the state of its
``keras.random.SeedGenerator``s, so a model restored from a checkpoint (or
``keras.callbacks.BackupAndRestore``) draws its training noise from the start
of the stream again and a resumed run drifts from an uninterrupted one. Layers
that draw noise mix in :class:`SeedStateMixin`: the states travel in the same
weights file under their own keys, and files written without them still load.
"""

_KEY = "seed_generator_state_"


class SeedStateMixin:
    """Adds the layer's seed-generator states to ``save_own_variables``.

    Put it before the Keras layer class in the bases:
    ``class MyLayer(SeedStateMixin, keras.layers.Layer)``.
    """

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for index, generator in enumerate(self._seed_generators):
            store[f"{_KEY}{index}"] = generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        seed_keys = {k for k in keys if k.startswith(_KEY)}
        super().load_own_variables({k: store[k] for k in keys if k not in seed_keys})
        for index, generator in enumerate(self._seed_generators):
            key = f"{_KEY}{index}"
            if key in seed_keys:
                generator.state.assign(store[key])
