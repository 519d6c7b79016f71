"""A fast start: ``import streamdet`` and ``streamdet --help`` / ``--version`` load no heavy
dependency; the public names still resolve (lazily) to the same objects."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

import streamdet
from streamdet.cli import _build_parser, main

HEAVY = ("scipy", "dask", "onnxruntime", "zarr", "xarray", "astropy", "distributed",
         "matplotlib", "torch")


def _loaded_after(code: str) -> list[str]:
    """Heavy top-level modules in sys.modules after running ``code`` in a fresh process."""
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & "
             f"set({list(HEAVY)!r}))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_streamdet_loads_no_heavy_dependency() -> None:
    assert _loaded_after("import streamdet") == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["convert", "--help"],
                                  ["info", "--help"], ["detect", "--help"]])
def test_cli_help_and_version_load_no_heavy_dependency(argv: list[str]) -> None:
    code = ("from streamdet.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit:\n"
            "    pass")
    assert _loaded_after(code) == []


def test_public_names_resolve_to_their_objects() -> None:
    import streamdet.contract
    import streamdet.detections
    import streamdet.io

    mods = sys.modules
    for name in streamdet.__all__:
        value = getattr(streamdet, name)
        assert value is not None
    assert streamdet.convert is mods["streamdet.convert"].convert
    assert streamdet.verify is mods["streamdet.convert"].verify
    assert streamdet.detect is mods["streamdet.detect"].detect
    assert streamdet.score is mods["streamdet.score"].score
    assert streamdet.simulate is mods["streamdet.simulate"].simulate
    assert streamdet.info is streamdet.io.info and streamdet.Image is streamdet.io.Image
    assert streamdet.Detections is streamdet.detections.Detections
    assert streamdet.load_model is streamdet.contract.load_model
    assert set(streamdet.__all__) <= set(dir(streamdet))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = streamdet.nothing


def test_function_named_like_its_submodule_survives_the_submodule_import() -> None:
    """``streamdet.convert`` is the function, as before, even when the submodule
    ``streamdet.convert`` is imported first (in a fresh process)."""
    code = ("import streamdet.convert, streamdet.detect, streamdet.score, streamdet.simulate\n"
            "import streamdet, types\n"
            "print(all(callable(getattr(streamdet, n)) and not isinstance(getattr(streamdet, n),"
            " types.ModuleType) for n in ('convert', 'detect', 'score', 'simulate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "True"


def test_star_import() -> None:
    namespace: dict[str, object] = {}
    exec("from streamdet import *", namespace)
    assert set(streamdet.__all__) <= set(namespace)


def _subcommand_helps(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help for a in action._choices_actions}


def test_plot_listed_with_its_own_help_without_importing_it() -> None:
    """Other commands list ``plot`` with the help text its module gives it."""
    assert _subcommand_helps(_build_parser(None)) == _subcommand_helps(_build_parser("plot"))


def test_version_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip().startswith("streamdet ")
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2 and "'plot'" in capsys.readouterr().err
