import importlib

import pytest

import ragpacer


@pytest.mark.parametrize(
    "package", ["ragpacer.pipeline", "ragpacer.agents", "ragpacer.retrieval"])
def test_all_lists_exactly_the_public_names(package: str) -> None:
    mod = importlib.import_module(package)
    public = {n for n in vars(mod) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(mod, n)).__name__ == "module"}
    assert public - submodules <= set(mod.__all__)
    assert all(getattr(mod, n) is not None for n in mod.__all__)
    assert mod.__all__ == sorted(mod.__all__)


def test_the_root_package_exports_the_sdk_the_errors_and_its_version() -> None:
    public = {n for n in vars(ragpacer) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(ragpacer, n)).__name__ == "module"}
    assert public - submodules - {"annotations", "version", "PackageNotFoundError",
                                  "TYPE_CHECKING"} <= set(ragpacer.__all__)
    assert {"Pipeline", "Result", "Settings", "InputError", "ConfigError",
            "__version__"} <= set(ragpacer.__all__)
    assert all(getattr(ragpacer, n) is not None for n in ragpacer.__all__)
    assert ragpacer.Pipeline.__module__ == "ragpacer.pipeline.sdk"
    assert ragpacer.__version__[0].isdigit()
