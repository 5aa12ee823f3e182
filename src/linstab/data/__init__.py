"""Images: the 20 lossless CIFAR-10 test images in ``foolbox``, user files, the JPEG CIFAR-10 set.

All images are returned as float32 tensors of shape ``(N, C, H, W)`` with values in [0, 1]:
``C = 3`` (RGB) for the CIFAR-10 sets and image files, the array's own channel count for
``.npy``/``.npz`` files (e.g. 1 for a grayscale network; the network checks it).
"""

from .cifar10_jpeg import cifar10_jpeg_dir, load_cifar10_jpeg
from .imagenet import IMAGENET_MEAN, IMAGENET_STD, preprocess
from .images import CIFAR10_CLASSES, DEFAULT_LABELS, check_images, default_images, load_images
from .selection import ImageSelection, parse_index_spec, select_images

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageSelection",
    "preprocess",
    "select_images",
    "CIFAR10_CLASSES",
    "DEFAULT_LABELS",
    "check_images",
    "cifar10_jpeg_dir",
    "default_images",
    "load_cifar10_jpeg",
    "load_images",
    "parse_index_spec",
]
