"""Test doubles of the order-book job's state: ``DictState``, a partition's Spark state
in memory, with commit and rollback like Spark's (the job simulation, the state tests and
the working-copy benchmark's reference)."""

from __future__ import annotations


class DictState:
    """``state.partition.StateBackend`` in memory; ``calls`` counts the state calls (each
    one a round trip to the JVM in the job)."""

    def __init__(self):
        self.meta: str | None = None
        self.journal: dict[int, tuple[str, str]] = {}
        self.chunk_map: dict[int, tuple[int, str]] = {}
        self._saved = (None, {}, {})
        self.calls = 0

    def meta_get(self):
        self.calls += 1
        return self.meta

    def meta_put(self, text):
        self.calls += 1
        self.meta = text

    def journal_get(self, seq):
        self.calls += 1
        return self.journal.get(seq)

    def journal_put(self, seq, token, text):
        self.calls += 1
        self.journal[seq] = (token, text)

    def journal_remove(self, seq):
        self.calls += 1
        self.journal.pop(seq, None)

    def chunks(self):
        self.calls += 1
        return iter([(seg, v, text) for seg, (v, text) in sorted(self.chunk_map.items())])

    def chunk_put(self, segment, version, text):
        self.calls += 1
        self.chunk_map[segment] = (version, text)

    def commit(self) -> None:
        self._saved = (self.meta, dict(self.journal), dict(self.chunk_map))

    def rollback(self) -> None:
        self.meta, journal, chunks = self._saved
        self.journal, self.chunk_map = dict(journal), dict(chunks)
