"""Start the order-book job the way Airflow does, from a shell or the Procfile.

    python -m marketstream.spark run        # exec spark-submit with the job's conf and env
    python -m marketstream.spark command    # print the spark-submit command line

Settings come from the environment (see ``marketstream/settings.py``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from marketstream.settings import get_settings
from marketstream.spark.config import SECRET_ENV, job_env, submit_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketstream.spark")
    parser.add_argument("action", choices=["run", "command"])
    args = parser.parse_args(argv)
    settings = get_settings()
    argv_ = submit_command(settings)
    if args.action == "command":
        # A secret is printed as a reference to the caller's environment, not as its value.
        env = " ".join(f'{k}="${k}"' if k in SECRET_ENV else f"{k}={shlex.quote(v)}"
                       for k, v in sorted(job_env(settings).items()))
        print(f"{env} {shlex.join(argv_)}")
        return 0
    settings.spark_checkpoint_dir.mkdir(parents=True, exist_ok=True)
    os.execvpe(argv_[0], argv_, {**os.environ, **job_env(settings)})
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
