"""Defaults shared by the library and the CLI's --help, which must not import torch to show them."""

DEFAULT_ARCH = "resnet8"  # the edge classifier that `edgecnn train` builds unless told otherwise
DEFAULT_EPOCHS = 30
DEFAULT_BATCH_SIZE = 32  # global batch
DEFAULT_WEIGHT_DECAY = 0.05
DEFAULT_DEMO_DIR = "edgecnn-demo"
