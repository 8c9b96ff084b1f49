"""The docs name tests as proof of their promises (docs/SECURITY.md above all): every test they name exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("*/README.md"), *ROOT.glob("hardware/*.md")])
NAMED = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")


def test_every_test_the_docs_name_exists():
    missing, seen = [], 0
    for doc in DOCS:
        for path, name in NAMED.findall(doc.read_text()):
            seen += 1
            file = ROOT / path
            if not file.exists():
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
            elif name and not re.search(rf"^(async )?def {name}\(", file.read_text(), re.M):
                missing.append(f"{doc.relative_to(ROOT)}: {path}::{name}")
    assert seen > 50
    assert not missing, "\n".join(missing)
