"""Adapters for LangChain and LlamaIndex: optional extras, imported only when asked for."""
