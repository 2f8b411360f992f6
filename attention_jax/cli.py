"""How the experiment scripts run: absl flags, quiet logs, one-line errors, preemption = success.

    _CONFIG = cli.config_flag("experiments/configs/<name>.py:<arg>")

    def main(config): ...
    if __name__ == "__main__":
        cli.run(main, _CONFIG)

Bad input ends the command with status 2 and one line, `<script>: error: <what is wrong>`, as
argparse reports bad arguments: a bad flag or flag value, a config file that is missing or
refuses its argument, a `--config.<field>` the config lacks (with the fields it has), and a
`ValueError` or `OSError` from the library (a bad config, a missing or malformed file). Set
ATTENTION_JAX_TRACEBACK=1 to see the traceback instead. A run stopped by SIGTERM has saved its
checkpoint (`training.Preempted`) and exits with status 0, so a TPU scheduler restarts it.
"""

import importlib.util
import os
import pathlib
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from attention_jax import training

TRACEBACK_VARIABLE = "ATTENTION_JAX_TRACEBACK"


def _fail(message) -> None:
    """Exits with status 2 after `<script>: error: <message>` on one line."""
    message = " ".join(str(message).split())
    print(f"{pathlib.Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _config_argument(argv, default: str) -> str:
    """The `--config` value on the command line (`--config=x` or `--config x`), else default."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.partition("=")[2]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return default


def _override_paths(argv) -> list[str]:
    """The field paths of `--config.<path>[=value]` and `--noconfig.<path>` flags."""
    paths = []
    for arg in argv:
        name = arg.partition("=")[0]
        for prefix in ("--config.", "--noconfig."):
            if name.startswith(prefix):
                paths.append(name.removeprefix(prefix))
    return paths


def load_config(argument: str) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a `path/to/config.py[:arg]` argument, or a one-line ValueError."""
    path, _, arg = argument.partition(":")
    if not pathlib.Path(path).is_file():
        raise ValueError(f"config file {path} not found")
    spec = importlib.util.spec_from_file_location("_attention_jax_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} has no get_config function")
    return module.get_config(arg) if arg else module.get_config()


def check_overrides(config: ml_collections.ConfigDict, paths) -> None:
    """A one-line ValueError for the first `--config.<path>` that names no field of `config`."""
    for path in paths:
        node = config
        for depth, key in enumerate(path.split(".")):
            if not isinstance(node, ml_collections.ConfigDict) or key not in node:
                where = ".".join(["config", *path.split(".")[:depth]])
                choices = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                raise ValueError(
                    f"--config.{path}: unknown config field {key!r} in {where}; "
                    + (f"its fields: {', '.join(choices)}" if choices else "it has no fields")
                )
            node = node[key]


def config_flag(default: str):
    """`config_flags.DEFINE_config_file("config", default)`, its input errors one line.

    config_flags reads `--config` and the `--config.<field>` overrides as the flag is defined,
    at import: the config file and the override names are checked here first.
    """
    try:
        config = load_config(_config_argument(sys.argv, default))
        check_overrides(config, _override_paths(sys.argv[1:]))
    except Exception as error:  # A config file is the user's input: any error in it is one line.
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        _fail(error)
    return config_flags.DEFINE_config_file("config", default)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        _fail(error)


def run(main, config_flag) -> None:
    """Parses the command line, then calls `main(config)` with the `--config` value."""

    def wrapped(argv):
        del argv
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO.
        try:
            config = config_flag.value
            if "train" in config:  # a bad training config fails before any data is prepared
                training.validate(config.train)
            main(config)
        except training.Preempted as preempted:
            logging.warning("%s; exiting", preempted)
        except (ValueError, OSError) as error:
            if os.environ.get(TRACEBACK_VARIABLE):
                raise
            _fail(error)
        return 0

    app.run(wrapped, flags_parser=_parse_flags)
