"""Benchmarks of resilient_llm against the raw official client and the libraries users pick instead.

``python -m benchmarks`` runs every scenario side by side against one loopback server (the testing
kit's, in a process of its own) and writes ``BENCHMARKS.md``; ``python -m benchmarks --smoke``
runs the same harness with tiny sizes, which is what the test suite does so the harness never rots.
Peers (LangChain, LlamaIndex) come from the ``bench`` extra and are skipped when not installed.
"""
