"""Child process of a sweep: ``python -m deepfake_fastai.worker runs/<sweep>/<run>/config.yaml``.

Exit code 0 when the run completed; train.run records any failure in the run's status.json itself.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> int:
    from .config import load_train_config
    from .train import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # recorded as failed by run()
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
    try:
        run(load_train_config(Path(argv[0])))
    except Exception as e:  # noqa: BLE001 - recorded in status.json by run(); the exit code tells the runner
        logging.getLogger(__name__).error("run failed: %s: %s", type(e).__name__, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
