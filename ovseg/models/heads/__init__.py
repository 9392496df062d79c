"""Transformer decoders (heads). Importing this package registers each in
:data:`ovseg.models.registry.TRANSFORMER_DECODERS`."""

from ovseg.models.heads import decoupled_decoder, transformer_decoder  # noqa: F401 (registration)
