"""How the experiment scripts run: absl flags, quiet logs, one-line errors, preemption = success.

    def main(config): ...
    if __name__ == "__main__":
        cli.run(main, _CONFIG)

Bad input (a `ValueError` or `OSError` from the library: a bad config, a missing or malformed
file) ends the command with status 2 and one line, `<script>: error: <what is wrong>`, as
argparse reports bad arguments; set ATTENTION_JAX_TRACEBACK=1 to see the traceback instead.
A run stopped by SIGTERM has saved its checkpoint (`training.Preempted`) and exits with status
0, so a TPU scheduler restarts it.
"""

import os
import pathlib
import sys

from absl import app, logging

from attention_jax import training


def run(main, config_flag) -> None:
    """Parses the command line, then calls `main(config)` with the `--config` value."""

    def wrapped(argv):
        del argv
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO.
        try:
            main(config_flag.value)
        except training.Preempted as preempted:
            logging.warning("%s; exiting", preempted)
        except (ValueError, OSError) as error:
            if os.environ.get("ATTENTION_JAX_TRACEBACK"):
                raise
            print(f"{pathlib.Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
            return 2  # app.run exits with main's return value
        return 0

    app.run(wrapped)
