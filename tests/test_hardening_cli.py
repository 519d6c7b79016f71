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
    import streamdet.engine.contract
    import streamdet.engine.detections
    import streamdet.io.image

    mods = sys.modules
    for name in streamdet.__all__:
        value = getattr(streamdet, name)
        assert value is not None
    assert streamdet.convert is mods["streamdet.io.convert"].convert
    assert streamdet.verify is mods["streamdet.io.convert"].verify
    assert streamdet.detect is mods["streamdet.engine.detect"].detect
    assert streamdet.score is mods["streamdet.catalogue.score"].score
    assert streamdet.simulate is mods["streamdet.sim.simulate"].simulate
    assert streamdet.info is streamdet.io.image.info and streamdet.Image is streamdet.io.image.Image
    assert streamdet.Detections is streamdet.engine.detections.Detections
    assert streamdet.load_model is streamdet.engine.contract.load_model
    assert set(streamdet.__all__) <= set(dir(streamdet))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = streamdet.nothing


def test_function_named_like_its_submodule_survives_the_submodule_import() -> None:
    """``streamdet.convert`` and ``streamdet.io.convert`` are the function, as before, even
    when the submodule ``streamdet.io.convert`` is imported first (in a fresh process)."""
    code = ("import streamdet.io.convert, streamdet.engine.detect, streamdet.catalogue.score\n"
            "import streamdet.sim.simulate, types\n"
            "import streamdet\n"
            "pairs = [(streamdet, n) for n in ('convert', 'detect', 'score', 'simulate')]\n"
            "pairs += [(streamdet.io, 'convert'), (streamdet.engine, 'detect'),\n"
            "          (streamdet.catalogue, 'score'), (streamdet.sim, 'simulate')]\n"
            "print(all(callable(getattr(p, n)) and not isinstance(getattr(p, n),"
            " types.ModuleType) for p, n in pairs))")
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
