"""Evaluation harness: retrieval quality on BEIR-format datasets and embedding quality on STS."""
