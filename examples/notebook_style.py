"""resilient_llm in a notebook: run the cells one by one (``# %%`` marks a cell in VS Code,
PyCharm and Jupytext), or the whole file with ``python examples/notebook_style.py``.

The sync facade is the one to use in notebooks: no event loop to manage, and every call is
bounded by a deadline, so a cell never hangs for ten minutes. With ``OPENAI_API_KEY`` set it
calls OpenAI; without it, the first cell starts the library's loopback mock server.
"""

# %% 1. A client (and the local mock server when there is no key)
import os

from resilient_llm import ResilientClient

server = None
base_url = api_key = None  # None: OPENAI_BASE_URL / OPENAI_API_KEY from the environment
if not os.environ.get("OPENAI_API_KEY"):
    from resilient_llm.testing import MockOpenAIServer

    server = MockOpenAIServer(latency=(0.01, 0.05)).start()
    base_url, api_key = server.base_url, "sk-local-mock"
    print(f"no OPENAI_API_KEY: using the local mock server at {server.base_url}")

# deadline: at most 30 s for any one call, retries and back-off included.
client = ResilientClient(base_url=base_url, api_key=api_key, deadline=30)
print(repr(client))  # never shows the API key

# %% 2. One call at a time
print(client.complete("Say hello in five words.", system="You are terse."))
vector = client.embed("hello world")
print(f"one vector of {len(vector)} floats")

# %% 2b. Tokens as they come: a stream, retried until its first chunk, bounded by its deadline
for delta in client.complete("Tell me about kettles in ten words.", stream=True):
    print(delta, end="", flush=True)
print()

# %% 3. A batch with a progress bar: every input ends as a vector or a recorded failure
reviews = [
    f"Review {i}: the {['blender', 'kettle', 'toaster'][i % 3]} is "
    f"{['great', 'fine', 'disappointing', 'noisy but it works'][i % 4]}."
    for i in range(200)
]
vectors = client.embed_batch(reviews, batch_size=50, progress=True)
print(vectors.summary())
print(repr(vectors))  # a one-line account: total, succeeded, failed, requests, retries

# %% 4. Summaries of many texts, bounded concurrency
summaries = client.summarize_batch(reviews[:12], max_words=12, max_concurrency=4, progress=True)
for index, summary in list(summaries.succeeded())[:3]:
    print(index, summary)
print(summaries.summary())


# %% 5. map: the same machinery for any per-item call (classification, extraction...)
def sentiment(review: str) -> str:
    return client.complete(f"Answer positive, negative or mixed. Review: {review}", deadline=10)


labels = client.map(sentiment, reviews[:20], max_concurrency=4, deadline_per_item=15)
print(f"{labels.stats.succeeded} labelled, {labels.stats.failed} failed")
labels.raise_for_failures()  # raises BatchFailed (with the whole result) if any item failed

# %% 6. Clean up
client.close()
if server is not None:
    server.stop()
print("done")
