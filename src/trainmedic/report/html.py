"""HTML building blocks: escaping, tables, the page shell and its inline stylesheet.

Everything a user controls (run, layer and class names, hyperparameter values, finding messages, evidence)
passes through :func:`esc` before it meets markup. The page holds no ``<script>`` and declares a
Content-Security-Policy that forbids scripts and every network fetch, so even a missed escape could not run
code or phone home; interactivity is CSS-only (``<details>``).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src 'none'; script-src 'none'"


def esc(value: object) -> str:
    """Text for HTML: every ``<``, ``>``, ``&`` and quote escaped."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A short, readable rendering of a number or a small structure (not yet escaped)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        items = [fmt(v, digits) for v in list(value)[:12]]
        more = f", … ({len(value)} items)" if len(value) > 12 else ""
        text = "[" + ", ".join(items) + more + "]"
        return text if len(text) <= 400 else text[:380] + f"… ({len(value)} items)]"
    if isinstance(value, Mapping):
        text = json.dumps(value, default=str)
        return text if len(text) <= 240 else text[:239] + "…"
    text = str(value)
    return text if len(text) <= 400 else text[:399] + "…"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """A table whose cells are escaped; a cell given as :class:`Raw` is inserted as is (already safe)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td>{c.html if isinstance(c, Raw) else esc(fmt(c))}</td>" for c in row)
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return ""
    c = f' class="{esc(cls)}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(items: Mapping[str, Any]) -> str:
    return table(["name", "value"], [(k, v) for k, v in items.items()], cls="kv")


class Raw:
    """Markup built here from escaped parts; the only way to put HTML into a table cell."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def badge(kind: str, text: str | None = None) -> str:
    """A coloured label; ``kind`` picks the colour (error, warning, info, healthy, nodata, unknown)."""
    s = str(kind).lower()
    cls = s if s in ("error", "warning", "info", "healthy", "nodata", "unknown") else "unknown"
    label = {"nodata": "no data"}.get(s, s)
    return f'<span class="badge {cls}">{esc(label if text is None else text)}</span>'


def missing(reason: str) -> str:
    """The short reason a section was left out."""
    return f'<p class="missing">Left out: {esc(reason)}</p>'


def figure(svg: str, caption: str, interactive_id: str | None = None) -> str:
    """A static figure; ``interactive_id`` names its interactive twin in the page's data (scripts on)."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    tag = f' data-tm="{esc(interactive_id)}"' if interactive_id else ""
    return f'<figure class="chart"{tag}>{svg}{cap}</figure>'


STYLE = """
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d8dde3;--bg:#ffffff;--panel:#f6f8fa;
--err:#D55E00;--warn:#E69F00;--ok:#009E73;--info:#0072B2}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
header.top{padding:18px 28px;background:#0b3d5c;color:#fff}
header.top h1{margin:0 0 4px;font-size:22px}
header.top p{margin:0;color:#d5e3ee}
nav.toc{padding:8px 28px;background:var(--panel);border-bottom:1px solid var(--line);font-size:13px}
nav.toc a{margin-right:14px;color:#0b5cad;text-decoration:none}
main{padding:8px 28px 40px;max-width:1500px}
section{margin:18px 0 8px}
h2{font-size:19px;border-bottom:2px solid var(--line);padding-bottom:4px;margin:26px 0 10px}
h3{font-size:16px;margin:18px 0 6px}
h4{font-size:14px;margin:12px 0 4px}
.verdict{display:flex;gap:14px;align-items:center;padding:12px 16px;border-radius:8px;margin:10px 0;
border-left:8px solid var(--muted);background:var(--panel)}
.verdict.error{border-color:var(--err)}.verdict.warning{border-color:var(--warn)}
.verdict.healthy{border-color:var(--ok)}.verdict.unknown{border-color:var(--muted)}
.verdict.nodata{border-color:var(--err)}
.verdict strong{font-size:18px}
.counts span{margin-right:10px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;
background:var(--muted);text-transform:uppercase;letter-spacing:.03em}
.badge.error{background:var(--err)}.badge.warning{background:#b77c00}.badge.info{background:var(--info)}
.badge.healthy{background:var(--ok)}.badge.nodata{background:var(--err)}
.finding{border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:10px 0;background:#fff}
.finding.error{border-left:6px solid var(--err)}.finding.warning{border-left:6px solid var(--warn)}
.finding.info{border-left:6px solid var(--info)}
.finding .head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.finding .code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:var(--muted)}
.finding .where{color:var(--muted);font-size:13px}
.finding p.msg{margin:6px 0}
ol.remedies{margin:4px 0 4px 18px;padding:0}
ol.remedies .auto{color:var(--ok);font-size:12px;font-weight:600}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--panel)}
table.kv td:first-child{font-family:ui-monospace,Menlo,Consolas,monospace;color:#333}
tr.kept td{background:#e9f7ef}tr.rejected td{background:#fdf0ea}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px;align-items:start}
figure.chart{margin:0;padding:8px;border:1px solid var(--line);border-radius:8px;background:#fff;overflow-x:auto}
figure.chart svg{max-width:100%;height:auto;display:block}
figcaption{font-size:12.5px;color:var(--muted);margin-top:4px}
p.missing{color:var(--muted);font-style:italic;margin:4px 0 10px}
p.note{color:var(--muted);font-size:13px}
details.run{border:1px solid var(--line);border-radius:8px;padding:4px 14px;margin:14px 0}
details.run>summary{cursor:pointer;font-size:17px;font-weight:600;padding:6px 0}
details.evidence>summary{cursor:pointer;color:#0b5cad;font-size:13px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
footer{color:var(--muted);font-size:12px;padding:10px 28px;border-top:1px solid var(--line)}
"""


def csp(script: str | None, live: bool = False) -> str:
    """No network, no plugins; the one inline script allowed by its hash; the live view may poll its origin."""
    if script is None:
        return CSP
    from .interactive import script_hash

    policy = CSP.replace("script-src 'none'", f"script-src {script_hash(script)}")
    return policy + ("; connect-src 'self'" if live else "")


def page(
    title: str,
    subtitle: str,
    toc: Sequence[tuple[str, str]],
    body: str,
    footer: str,
    data: Mapping[str, Any] | None = None,
    live: Mapping[str, Any] | None = None,
) -> str:
    """The whole self-contained document.

    ``data``: the interactive charts (``{"charts": {id: spec}}``); with it the page inlines uPlot and the
    interactive script (allowed by hash) and the figure data as JSON; without it the page has no script.
    ``live``: ``{"url", "interval_ms"}`` of the live view's JSON endpoint (``trainmedic serve``).
    """
    links = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in toc)
    script = style = blob = banner = ""
    policy = CSP
    if data is not None and (data.get("charts") or live):
        from .interactive import assets, encode

        js, css = assets()
        policy = csp(js, live=bool(live))
        style = f"<style>{css}</style>"
        payload = {"charts": dict(data.get("charts") or {}), "live": dict(live) if live else None}
        blob = f'<script type="application/json" id="tm-data">{encode(payload)}</script>'
        script = f"<script>{js}</script>"
    if live:
        banner = (
            '<div id="tm-live"><span id="tm-live-status">live view: waiting for the first update</span>'
            '<ul id="tm-live-findings"></ul></div>'
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)}</title><style>{STYLE}</style>{style}</head><body>{banner}"
        f'<header class="top"><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>'
        f'<nav class="toc">{links}</nav><main>{body}</main><footer>{esc(footer)}</footer>'
        f"{blob}{script}</body></html>\n"
    )
