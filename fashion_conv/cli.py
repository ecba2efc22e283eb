"""``fashion-conv COMMAND ...``: one console command for the ``python -m fashion_conv...`` entry points.

Each command's module is imported only when it runs, so ``fashion-conv --help`` is instant and a command whose
module is missing from this installation is one error line, not a traceback.
"""

from __future__ import annotations

import importlib
import runpy
import sys

# name: (module run as python -m, what it does). Commands first, then the research tools.
COMMANDS = {
    "fit": ("fashion_conv.fit", "train, test the best checkpoint, export model.pth (LightningCLI)"),
    "predict": ("fashion_conv.predict", "classify images, folders of images and CSVs with a trained model"),
    "export": ("fashion_conv.export", "write a trained backbone as a torch.export program or ONNX"),
    "prepare": ("fashion_conv.prepare", "build data/processed/*.csv from the official Fashion-MNIST files"),
    "serve": ("fashion_conv.serve", "classify images over HTTP (LitServe), with a page at /"),
    "explain": ("fashion_conv.research.explain", "what a trained model looks at"),
    "experiments": ("fashion_conv.research.experiments", "the notebook's questions, measured, written up as a report"),
    "ingredients": ("fashion_conv.research.ingredients", "what each ingredient of the strong training recipe is worth"),
    "robust": ("fashion_conv.research.robust", "corruptions, adversarial attacks and calibration, as a report"),
    "bench": ("fashion_conv.research.bench", "the notebook's training loop vs fit, timed side by side"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(
        [
            "usage: fashion-conv COMMAND [options]   (the same as python -m MODULE [options]; fit: fashion_conv.fit)",
            "",
            "commands:",
            *lines,
            "",
            "fashion-conv COMMAND --help lists a command's options.",
        ]
    )


def _entry_point(module_name: str):
    """The command's ``main(argv)``: in its module or that package's ``cli`` module; ``None`` if neither has one."""
    module = importlib.import_module(module_name)
    if callable(getattr(module, "main", None)):
        return module.main
    try:
        return importlib.import_module(f"{module_name}.cli").main
    except (ModuleNotFoundError, AttributeError):
        return None


def run(command: str, argv: list[str]) -> int:
    module_name = COMMANDS[command][0] if command in COMMANDS else f"fashion_conv.{command}"
    try:
        main = _entry_point(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, "fashion_conv"):
            print(f"error: fashion-conv {command}: {module_name} is not part of this installation", file=sys.stderr)
        else:
            print(f"error: fashion-conv {command} needs the Python package {exc.name!r}, which is not installed", file=sys.stderr)
        return 1
    if main is not None:
        return main(argv) or 0
    sys.argv = [f"fashion-conv {command}", *argv]  # a module with only a __main__: run it as python -m would
    try:
        runpy.run_module(module_name, run_name="__main__", alter_sys=True)
    except ImportError:  # a package without __main__
        print(f"error: fashion-conv {command}: {module_name} has no main() to run", file=sys.stderr)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: fashion-conv: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run(command, rest)


if __name__ == "__main__":
    sys.exit(main())
