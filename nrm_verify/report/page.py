"""The HTML page every report of nrm_verify writes its body into (a title, a small style sheet)."""

from __future__ import annotations

import html


def html_page(title: str, body: str) -> str:
    """A whole HTML document: ``title`` (escaped) as its title and heading, ``body`` (HTML) below."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
            "td,th{padding:2px 8px;text-align:left}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n")
