"""The chat's Documents tab: the collection's files (chunks, pages, size, when modified and
ingested), upload (drag and drop, many files at once) and delete, each followed by the incremental
ingest with a progress bar and the per-file summary. The work is done by a `DocumentShelf` that
the CLI passes in (`ingest.library.Library`); names and summaries are shown as plain text."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import RagBotError
from .names import shown

if TYPE_CHECKING:
    from .protocols import DocumentShelf

log = logging.getLogger(__name__)

COLUMNS = ["File", "Chunks", "Pages", "Size", "Modified", "Ingested"]
# Gradio refuses a hidden file (a name starting with a dot) before our code sees it when its upload
# folder lies under the working directory, and shows only "Error". So the page takes hidden files out
# of the upload and sends just their names, for the summary to say why they were not added.
HIDDEN_FILES_JS = """(files, refused, ...rest) => {
  const name = (file) => file.orig_name || String(file.path).split("/").pop();
  const hidden = (file) => String(file.path).split("/").pop().startsWith(".") || name(file).startsWith(".");
  const all = files || [];
  return [all.filter((file) => !hidden(file)), JSON.stringify(all.filter(hidden).map(name)), ...rest.slice(0, %d)];
}"""


def documents_tab(shelves: Callable[[str | None], DocumentShelf], picker: Any = None) -> tuple[Callable, list]:
    """Add the tab's components to the Blocks being built. `shelves(collection)` gives the shelf of
    the collection the `picker` dropdown shows (None: the configured one). Returns the function that
    fills the tab and its outputs, for the caller to run on page load, tab select and a new pick."""
    import gradio as gr

    folder = gr.Textbox(label="Folder this collection mirrors", interactive=False, elem_id="doc-folder")
    table = gr.Dataframe(headers=COLUMNS, datatype="str", interactive=False, elem_id="files", wrap=True)
    upload = gr.File(file_count="multiple", label="Add documents: drop files here or click to choose",
                     elem_id="upload")
    with gr.Row():
        chosen = gr.Dropdown(choices=[], multiselect=True, label="Files to delete", elem_id="delete-choice", scale=3)
        delete = gr.Button("Delete from the folder and the store", variant="stop", elem_id="delete", scale=1)
    status = gr.Textbox(label="Last change", interactive=False, lines=6, elem_id="doc-status")
    refused = gr.Textbox(visible=False, elem_id="upload-refused")  # hidden files' names, set by HIDDEN_FILES_JS

    def listing(collection: str | None = None) -> tuple[str, list[list[str]], Any]:
        shelf = shelves(collection or None)
        try:
            where = shelf.folder()
            rows = shelf.rows()
        except RagBotError as exc:
            return f"(unavailable: {exc})", [], gr.update(choices=[], value=[])
        place = str(where) if where else "none yet: run rag-bot ingest DIR once"
        return place, [row_cells(row) for row in rows], gr.update(choices=[row["source"] for row in rows], value=[])

    def added(files: list | None, hidden: str | None, collection: str | None = None,
              progress: Any = gr.Progress(track_tqdm=True)) -> tuple:
        paths = [Path(item if isinstance(item, str) else item.name) for item in files or []]
        shelf = shelves(collection or None)
        lines = [f"Not added: {shown(name)}: a hidden file (its name starts with a dot); rename it and add it again"
                 for name in _names(hidden)]
        if paths or not lines:
            lines.append(_run(lambda: shelf.add(paths, progress=True)) if paths else "No files chosen.")
        return ("\n".join(lines), *listing(collection), None)

    def deleted(sources: list[str] | None, collection: str | None = None,
                progress: Any = gr.Progress(track_tqdm=True)) -> tuple:
        shelf = shelves(collection or None)
        summary = _run(lambda: shelf.remove(list(sources), progress=True)) if sources else "Choose files to delete first."
        return (summary, *listing(collection))

    picked = [picker] if picker is not None else []
    upload.upload(added, [upload, refused, *picked], [status, folder, table, chosen, upload], concurrency_limit=1,
                  concurrency_id="documents", js=HIDDEN_FILES_JS % len(picked))
    delete.click(deleted, [chosen, *picked], [status, folder, table, chosen], concurrency_limit=1,
                 concurrency_id="documents")
    return listing, [folder, table, chosen]


def row_cells(row: dict[str, Any]) -> list[str]:
    """A table row as text: sizes in KB/MB, times as local date and time."""
    return [row["source"], str(row["chunks"]), str(row["pages"] or ""), _size(row["size"]), _when(row["modified"]),
            _when(row["ingested"]) if row["ingested"] else "?"]


def _run(work: Any) -> str:
    try:
        return work()
    except RagBotError as exc:
        return f"Not done: {exc}"
    except Exception as exc:  # a bug: readable here, details in the server log
        log.exception("the documents change failed")
        return f"Something went wrong ({type(exc).__name__}); the details are in the server log."


def _names(hidden: str | None) -> list[str]:
    """The names the page sent as a JSON list of strings; anything else is ignored."""
    try:
        names = json.loads(hidden or "[]")
    except ValueError:
        return []
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def _size(size: int) -> str:
    return f"{size / 1048576:.1f} MB" if size >= 1048576 else f"{max(1, round(size / 1024))} KB"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))
