import pytest

from ovseg.utils.registry import Registry, RegistryError


def test_register_get_and_list():
    reg = Registry("widget", config_key="model.widget.type")

    @reg.register("round")
    class Round:
        pass

    reg.register("square", obj=dict)
    assert reg.get("round") is Round and reg.get("square") is dict
    assert reg.names() == ["round", "square"] and "round" in reg and len(reg) == 2


def test_duplicate_name_is_refused_naming_the_holder():
    reg = Registry("widget")
    reg.register("a", obj=int)
    with pytest.raises(
        RegistryError, match=r"widget 'a' is already registered \(by builtins\.int\)"
    ):
        reg.register("a", obj=float)
    assert reg.get("a") is int  # the first registration is kept


def test_unknown_name_suggests_the_closest_and_names_the_key():
    reg = Registry("backbone", config_key="model.backbone.type")
    for name in ("clip_convnext", "clip_resnet", "clip_vit"):
        reg.register(name, obj=object)
    with pytest.raises(RegistryError) as info:
        reg.get("clip_convnxt")
    msg = str(info.value)
    assert "did you mean 'clip_convnext'?" in msg and "(model.backbone.type)" in msg
    assert "registered: clip_convnext, clip_resnet, clip_vit" in msg
