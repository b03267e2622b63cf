"""A minimal PDF writer: pages of plain text (Helvetica), uncompressed, with a valid xref.

Enough for pypdf to extract the text back; used to make large test and bench documents
without a PDF library."""

from __future__ import annotations

import random
from collections.abc import Iterable


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(pages: Iterable[list[str]]) -> bytes:
    """A PDF with one page per item of ``pages``, each a list of lines (ASCII)."""
    bodies: list[bytes] = [b"", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        shown = " ".join(f"({_escape(line)}) '" for line in lines)
        content = f"BT /F1 9 Tf 11 TL 40 810 Td {shown} ET".encode()
        page, stream = len(bodies) + 1, len(bodies) + 2
        kids.append(f"{page} 0 R")
        bodies.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font "
            f"<< /F1 3 0 R >> >> /Contents {stream} 0 R >>".encode()
        )
        bodies.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    bodies[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    bodies[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(bodies) + 1,
        xref,
    )
    return bytes(out)


def filler_pages(target_bytes: int, *, lines_per_page: int = 70) -> list[list[str]]:
    """Pages of varied English-like sentences, enough for a PDF of about ``target_bytes``."""
    words = [
        "refund",
        "shipping",
        "parcel",
        "warehouse",
        "invoice",
        "customer",
        "account",
        "password",
        "token",
        "budget",
        "roadmap",
        "hiring",
        "planning",
        "review",
        "release",
        "incident",
        "backup",
        "network",
        "storage",
        "latency",
        "report",
        "contract",
        "policy",
        "support",
        "ticket",
        "schedule",
    ]
    pick = random.Random(20261203).choice  # noqa: S311 (the same pages every run)
    pages, size, n = [], 0, 0
    while size < target_bytes:
        lines = []
        for _ in range(lines_per_page):
            n += 1
            lines.append(f"Line {n}: the {' '.join(pick(words) for _ in range(14))}.")
        pages.append(lines)
        size += sum(len(line) + 4 for line in lines) + 220
    return pages
