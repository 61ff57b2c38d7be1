"""The JVM artifacts the platform runs beside pyspark: Apache Kafka's broker and Spark's own
Kafka connector.

Each set is declared in ``jvm/<name>.ivy.xml`` and resolved from Maven Central by the Ivy
jar that ships inside pyspark (so Java and the project's Python packages are all it takes:
no Maven install), into ``.cache/jvm/<name>/`` under the project. ``jvm/<name>.lock`` pins
the result: every file's name and SHA-256; a resolution that yields anything else fails.

    python -m marketstream.jvm_deps kafka-broker spark-kafka     # resolve (once) and verify
    python -m marketstream.jvm_deps --lock kafka-broker          # after changing an ivy.xml
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from marketstream.settings import PROJECT_ROOT

JVM_DIR = PROJECT_ROOT / "jvm"
CACHE_DIR = PROJECT_ROOT / ".cache" / "jvm"
IVY_CACHE = PROJECT_ROOT / ".cache" / "ivy"
SETS = ("kafka-broker", "spark-kafka")


class JvmDepsError(RuntimeError):
    """A JVM artifact set could not be resolved, or differs from its lock."""


def _ivy_jar() -> Path:
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("ivy-*.jar"))
    if not jars:
        raise JvmDepsError("pyspark's jars directory has no Ivy jar to resolve JVM artifacts with")
    return jars[-1]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock_path(name: str) -> Path:
    return JVM_DIR / f"{name}.lock"


def _read_lock(name: str) -> dict[str, str]:
    lock = _lock_path(name)
    if not lock.exists():
        raise JvmDepsError(f"{lock} is missing: run python -m marketstream.jvm_deps --lock {name}")
    entries = {}
    for line in lock.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, filename = line.split()
            entries[filename] = digest
    return entries


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(directory.glob("*.jar"))}


def _resolve_into(name: str, target: Path) -> None:
    """Runs Ivy for ``jvm/<name>.ivy.xml``, copying the resolved jars into ``target``."""
    java = shutil.which("java")
    if java is None:
        raise JvmDepsError("java is not on PATH (Java 17 or newer is needed)")
    command = [java, "-jar", str(_ivy_jar()), "-ivy", str(JVM_DIR / f"{name}.ivy.xml"),
               "-cache", str(IVY_CACHE), "-confs", "default", "-types", "jar", "bundle",
               "-retrieve", f"{target}/[organisation]__[artifact]-[revision](-[classifier]).[ext]", "-warn"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise JvmDepsError(f"resolving {name} from Maven Central failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def jars(name: str) -> list[Path]:
    """The jars of set ``name``, resolved on first use and checked against its lock."""
    if name not in SETS:
        raise JvmDepsError(f"unknown JVM artifact set {name!r} (known: {', '.join(SETS)})")
    wanted = _read_lock(name)
    directory = CACHE_DIR / name
    if directory.is_dir() and _digests(directory) == wanted:
        return sorted(directory.glob("*.jar"))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE_DIR))
    try:
        _resolve_into(name, staging)
        got = _digests(staging)
        if got != wanted:
            missing = sorted(set(wanted) - set(got))
            extra = sorted(set(got) - set(wanted))
            changed = sorted(f for f in set(got) & set(wanted) if got[f] != wanted[f])
            raise JvmDepsError(f"the resolved {name} jars differ from {_lock_path(name)}: missing {missing}, "
                               f"unexpected {extra}, different content {changed}")
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(directory.glob("*.jar"))


def resolved_jars(name: str) -> list[Path]:
    """The jars of set ``name`` already in the cache, unchecked and never resolved: cheap
    enough for the Spark settings an Airflow DAG builds at parse time."""
    return sorted((CACHE_DIR / name).glob("*.jar"))


def classpath(name: str) -> str:
    return os.pathsep.join(str(p) for p in jars(name))


def write_lock(name: str) -> Path:
    if name not in SETS:
        raise JvmDepsError(f"unknown JVM artifact set {name!r} (known: {', '.join(SETS)})")
    staging = Path(tempfile.mkdtemp(prefix=f"{name}-lock-"))
    try:
        _resolve_into(name, staging)
        lines = [f"# {name}: resolved from jvm/{name}.ivy.xml; sha256 and file name per line.",
                 *(f"{digest}  {filename}" for filename, digest in _digests(staging).items())]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    lock = _lock_path(name)
    lock.write_text("\n".join(lines) + "\n")
    return lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketstream.jvm_deps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*", metavar="SET", help=f"one of {', '.join(SETS)} (default: all)")
    parser.add_argument("--lock", action="store_true", help="resolve and write jvm/<set>.lock")
    args = parser.parse_args(argv)
    try:
        for name in args.sets or SETS:
            if args.lock:
                print(f"wrote {write_lock(name)}")
            else:
                print(f"{name}: {len(jars(name))} jars in {CACHE_DIR / name}")
    except JvmDepsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
