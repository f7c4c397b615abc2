"""rag-bot: a local RAG chatbot over your own documents.

The public API is small and listed in `__all__`; importing this package loads no heavy library
(torch, chromadb, sentence-transformers, gradio, llama-cpp).
"""

from .config import Config, load_config
from .errors import ConfigError, InputError, ModelError, RagBotError, StoreError, UsageError
from .chain import RagChain, Source, load_chain
from .results import Retrieval
from .retriever import RagRetriever, load_retriever

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "InputError",
    "ModelError",
    "RagBotError",
    "RagChain",
    "RagRetriever",
    "Retrieval",
    "Source",
    "StoreError",
    "UsageError",
    "__version__",
    "load_chain",
    "load_config",
    "load_retriever",
]
