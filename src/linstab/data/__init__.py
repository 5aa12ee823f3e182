"""data"""

from .cifar10_jpeg import cifar10_jpeg_dir, load_cifar10_jpeg
from .images import CIFAR10_CLASSES, DEFAULT_LABELS, check_images, default_images, load_images
from .selection import parse_index_spec

__all__ = [
    "CIFAR10_CLASSES",
    "DEFAULT_LABELS",
    "check_images",
    "cifar10_jpeg_dir",
    "default_images",
    "load_cifar10_jpeg",
    "load_images",
    "parse_index_spec",
]
