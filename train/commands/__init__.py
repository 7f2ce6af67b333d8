"""The ``fcnx`` subcommands of the training side, one module each (see runtime/cli.py).

Each module's top level imports only argparse and the TF-free configs, so building
a parser is cheap; TensorFlow is imported inside ``run``.
"""
