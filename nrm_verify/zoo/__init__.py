"""Seeded models for the tests, the benchmarks and the commands (nothing is downloaded):
:mod:`~nrm_verify.zoo.models` (VGG16, MLPs, CNNs, AlexNet with LRN) and
:mod:`~nrm_verify.zoo.architectures` (ResNet, Inception and DenseNet blocks).
"""
