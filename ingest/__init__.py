"""The ingest job: folder -> discover -> load -> split -> index (incremental, crash-safe).

`run_ingest(config, folder)` is the entry point; `rag-bot ingest DIR` calls it.
"""

__all__ = ["run_ingest"]


def __getattr__(name: str):  # keep `import ingest` light: the pipeline loads on first use
    if name == "run_ingest":
        from .pipeline import run_ingest

        return run_ingest
    raise AttributeError(f"module 'ingest' has no attribute {name!r}")
