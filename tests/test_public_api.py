import importlib

import pytest


@pytest.mark.parametrize("package", ["pipeline", "agents", "retrieval"])
def test_all_lists_exactly_the_public_names(package: str) -> None:
    mod = importlib.import_module(package)
    public = {n for n in vars(mod) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(mod, n)).__name__ == "module"}
    assert public - submodules <= set(mod.__all__)
    assert all(getattr(mod, n) is not None for n in mod.__all__)
    assert mod.__all__ == sorted(mod.__all__)
