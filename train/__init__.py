"""fcnx.train: the Keras side (FCN family, data, training, evaluation). Keras is imported
by the modules that need it, so ``fcnx synth`` and the CLI work without TensorFlow."""
