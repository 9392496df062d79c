"""ovseg: open-vocabulary semantic, instance and panoptic segmentation (FC-CLIP design).

Importing ovseg is cheap; ``Segmenter`` pulls in torch/open_clip on first use.
"""

from ovseg.text.vocabulary import Vocabulary

__version__ = "0.1.0"
__all__ = ["Segmenter", "Vocabulary", "__version__"]


def __getattr__(name: str):
    if name == "Segmenter":
        from ovseg.inference.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'ovseg' has no attribute {name!r}")
