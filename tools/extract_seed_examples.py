"""One-off developer tool: copy the example payloads of the vendor pages into tests/fixtures.

    python tools/extract_seed_examples.py ../shared/seeds tests/fixtures

Reads the Tracify page (seed 002) and writes each "... Event" example exactly as printed,
including the trailing comma of the Conversion example (which the tests expect to be refused
with a clear parse error); the object the Gravity pixel's ``getCAPIData()`` returns (seed 000);
and, for the two vendors whose seed pages lost their code blocks, the request examples that
vendor-contracts.md recovered from the vendors' other pages (Gravity Field 4.8, RECO 2.7).
The project never reads the seeds at run or test time; only this tool does, by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADINGS = {
    "Pageview Event": "pageview.json",
    "Product View Event": "productview.json",
    "Add to Cart Event": "addtocart.json",
    "Purchase Event": "purchase.json",
    "Conversion Event": "conversion.json",
}


def tracify_examples(text: str) -> dict[str, str]:
    """Heading → the JSON text that follows it, up to the next heading."""
    pattern = "|".join(re.escape(h) for h in [*HEADINGS, "API Specification"])
    pieces = re.split(f"^({pattern})$", text, flags=re.M)
    found = {}
    for heading, body in zip(pieces[1::2], pieces[2::2]):
        if heading in HEADINGS:
            found[HEADINGS[heading]] = body.strip() + "\n"
    return found


def json_block_after(text: str, marker: str) -> str:
    """The first fenced ```json block after ``marker``."""
    start = text.index("```json", text.index(marker)) + len("```json")
    return text[start : text.index("```", start)].strip() + "\n"


def braces_after(text: str, marker: str) -> str:
    """The balanced ``{...}`` that follows ``marker`` (the seeds print JSON without fences)."""
    start = text.index("{", text.index(marker))
    depth = 0
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[start : end + 1] + "\n"
    raise ValueError(f"unbalanced braces after {marker!r}")


def write(path: Path, payload: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload)
    print(f"wrote {path}")


def main(seeds: Path, out: Path) -> None:
    for name, payload in tracify_examples(next(seeds.glob("002_*.txt")).read_text()).items():
        write(out / "tracify" / name, payload)
    capi = next(seeds.glob("000_*.txt")).read_text()
    write(out / "gravity_capi_pixel_data.json", braces_after(capi, "getCAPIData() returns a ready-to-merge object:"))
    contracts = (seeds.parent / "vendor-contracts.md").read_text()
    write(out / "gravity_field" / "purchase_request.json", json_block_after(contracts, "### 4.8 Minimal example"))
    write(out / "gravity_reco" / "add_events.json", json_block_after(contracts, "### 2.7 Minimal example"))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
