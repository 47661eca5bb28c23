"""The optimizers a params file may name: ``optimizer.name`` -> the ``torch.optim`` class. Torch-free, so
the settings schema (pixelzoo.pipeline.settings) and the training loop share it without either importing
the other."""

OPTIMIZERS = {"rmsprop": "RMSprop", "adam": "Adam", "sgd": "SGD"}
