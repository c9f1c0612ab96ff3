"""Text out of a file's bytes, chosen by its extension: plain text, Markdown, HTML, JSON, CSV,
source code, PDF (pypdf) and DOCX (python-docx). Anything else is unsupported.

:class:`ExtractError` carries the ``last_error.code`` the vector store file fails with.
"""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import PurePath

TEXT_EXTENSIONS = {
    ".txt", ".md", ".markdown", ".rst", ".json", ".csv", ".tsv", ".log", ".xml", ".yaml", ".yml",
    ".toml", ".ini", ".tex",
    # source code
    ".py", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cpp", ".cc", ".hpp", ".cs",
    ".go", ".rb", ".php", ".sh", ".bash", ".css", ".rs", ".kt", ".swift", ".scala", ".sql", ".r",
    ".pl", ".lua", ".m", ".vue",
}
HTML_EXTENSIONS = {".html", ".htm"}
SUPPORTED = TEXT_EXTENSIONS | HTML_EXTENSIONS | {".pdf", ".docx"}


class ExtractError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExtractError("invalid_file", "The file is not valid UTF-8 text.") from None


class _HTMLText(HTMLParser):
    SKIP = {"script", "style", "noscript", "template"}
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
             "table", "ul", "ol", "pre", "blockquote", "title", "header", "footer"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def _html(text: str) -> str:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join((page.extract_text() or "") for page in reader.pages)
    except Exception as exc:
        raise ExtractError("invalid_file", f"The PDF could not be read: {exc}") from None


def _docx(data: bytes) -> str:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise ExtractError("invalid_file", f"The DOCX file could not be read: {exc}") from None
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append("\t".join(cell.text for cell in row.cells))
    return "\n".join(parts)


def extract(filename: str, data: bytes) -> str:
    """The text of a file, or :class:`ExtractError` (unsupported type, unreadable, or no text)."""
    ext = PurePath(filename.lower()).suffix
    if ext not in SUPPORTED:
        raise ExtractError("unsupported_file",
                           f"Files of type '{ext or filename}' are not supported for file search. "
                           f"Supported: {', '.join(sorted(SUPPORTED))}.")
    if ext == ".pdf":
        text = _pdf(data)
    elif ext == ".docx":
        text = _docx(data)
    elif ext in HTML_EXTENSIONS:
        text = _html(_decode(data))
    else:
        text = _decode(data)
    if "\x00" in text:
        raise ExtractError("invalid_file", "The file contains binary data, not text.")
    if not text.strip():
        raise ExtractError("invalid_file", "No text could be extracted from the file.")
    return text
