"""Write examples/docs/how-retrieval-works.pdf, the example PDF (three pages, one topic each).

Run with the project's venv (`fpdf2` comes with the test extras): `.venv/bin/python examples/make_pdf.py`.
"""

from pathlib import Path

from fpdf import FPDF

PAGES = [
    ("How rag-bot finds answers: embeddings",
     "When a document is ingested, rag-bot cuts it into chunks of about two hundred tokens and turns "
     "each chunk into a vector with a bi-encoder, the all-MiniLM-L6-v2 sentence embedding model. "
     "A bi-encoder reads each passage once, on its own, so the vectors can be computed ahead of time "
     "and stored in the Chroma vector database. At question time only the question is embedded, and "
     "the nearest chunk vectors are found in milliseconds. This is fast, but a single vector cannot "
     "capture every detail of a passage, so the first list of candidates is only approximately right."),
    ("Diversity and reranking",
     "The first stage uses maximal marginal relevance (MMR). Instead of taking the twenty chunks most "
     "similar to the question, MMR trades some relevance for diversity, so that five near-identical "
     "paragraphs do not crowd out a different passage that holds the answer. The second stage is a "
     "cross-encoder reranker. A cross-encoder reads the question and a passage together and scores "
     "how well the passage answers the question. It is far more precise than comparing vectors but "
     "also much slower, so it only reranks the short list of candidates: retrieve, then rerank."),
    ("Refusing what it does not know",
     "Before any language model is called, a small classifier trained on embeddings decides whether "
     "the question is one the documents can answer. Questions about the weather, small talk and "
     "attempts to override the instructions are declined at once. When a question is in scope, the "
     "answer is generated from the best passages only, and every answer lists its sources with the "
     "file name, the page and the heading, so you can check where each statement came from."),
]


def main() -> None:
    pdf = FPDF()
    pdf.set_title("How rag-bot finds answers")
    for title, body in PAGES:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 10, title)
        pdf.ln(4)
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 7, body)
    out = Path(__file__).parent / "docs" / "how-retrieval-works.pdf"
    pdf.output(str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
