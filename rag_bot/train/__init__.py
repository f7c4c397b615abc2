"""Fine-tuning on the user's own data: pair files, the bi-encoder, the cross-encoder reranker, and
synthetic pairs written by the local LLM."""
