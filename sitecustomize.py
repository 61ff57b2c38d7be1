"""Python runs this at the start of every interpreter that has the project root on
``PYTHONPATH``, as every Python process of the order-book job does (``job_env``).

Spark starts its Python processes (the driver, data-source planners, the
transformWithState driver worker, the task workers' daemon) with its own
``python/lib/pyspark.zip`` and bundled py4j zip first on ``PYTHONPATH``. Python cannot
cache bytecode for modules imported from a zip, so each of those processes would compile
pyspark from source again: ~0.6 s of CPU apiece, about ten of them in a job's first
batch, most one after the other (docs/deployment.md, "Restart time"). When those zips are the ones
shipped inside the very pyspark package that is installed (``SPARK_HOME`` is that
package: pip's pyspark, the Docker images), the installed copies are the same release
with compiled bytecode: the zips move to the end of ``sys.path``, still there as a
fallback. Any other Spark distribution's zips are left where they are.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import PathFinder


def _bundled_zips(path: list[str]) -> list[str]:
    return [entry for entry in path if os.path.basename(entry) == "pyspark.zip"
            or (os.path.basename(entry).startswith("py4j-") and entry.endswith("-src.zip"))]


def prefer_installed_pyspark(path: list[str]) -> list[str]:
    """Moves to the end of ``path`` (in place) the zips that the installed pyspark
    package bundles, when that package and py4j are importable without them; returns
    what it moved."""
    zips = _bundled_zips(path)
    if not zips:
        return []
    rest = [entry for entry in path if entry not in zips]
    pyspark = PathFinder.find_spec("pyspark", rest)
    if pyspark is None or not pyspark.submodule_search_locations or PathFinder.find_spec("py4j", rest) is None:
        return []
    bundled_dir = os.path.join(os.path.realpath(pyspark.submodule_search_locations[0]), "python", "lib")
    moved = [entry for entry in zips if os.path.dirname(os.path.realpath(entry)) == bundled_dir]
    for entry in moved:
        path.remove(entry)
        path.append(entry)
    return moved


prefer_installed_pyspark(sys.path)
