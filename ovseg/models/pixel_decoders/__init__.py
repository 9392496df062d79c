"""Pixel decoders. Importing this package registers each in
:data:`ovseg.models.registry.PIXEL_DECODERS`."""

from ovseg.models.pixel_decoders import msdeform  # noqa: F401 (registration)
