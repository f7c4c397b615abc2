"""The bundled prompt templates, installed as the package `rag_bot.prompts` (pyproject.toml maps this
folder); `rag_bot.prompting` loads and checks them."""
