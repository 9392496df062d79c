"""Prompt / text-classifier builders, selected by ``model.text.type``.

An entry maps ``(text config, text tower, weights_id)`` to an encoder with the
:class:`ovseg.text.classifier.TextEncoder` interface (``encoder(vocabulary, device) ->
TextClassifier``). The text tower is any object with ``name``, ``encode_text``,
``context_length`` and the prefix-cache pair of :class:`ovseg.models.backbones.Backbone`.
"""

from ovseg.utils.registry import Registry

PROMPT_BUILDERS = Registry("prompt builder", config_key="model.text.type")
