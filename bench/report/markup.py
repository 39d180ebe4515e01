"""Tables as text: GitHub-flavoured Markdown and booktabs LaTeX, from (headers, rows, bold flags)."""

from __future__ import annotations


def _md(text) -> str:
    return str(text).replace("|", "\\|")  # a pipe inside a cell (e.g. layers=a.*|b.*) would split it


def to_markdown(headers, rows, bold=None) -> str:
    """Return a GitHub-flavoured Markdown table; bold cells are wrapped in ``**``; pipes inside cells are escaped."""
    bold = bold or [[False] * len(headers) for _ in rows]
    lines = [
        "| " + " | ".join(_md(h) for h in headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    for texts, flags in zip(rows, bold):
        lines.append("| " + " | ".join(f"**{_md(t)}**" if f and t else _md(t) for t, f in zip(texts, flags)) + " |")
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    """Return ``text`` with LaTeX's special characters escaped."""
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def to_latex(headers, rows, bold=None, caption: str = "", label: str = "") -> str:
    """Return a booktabs LaTeX table; bold cells use ``\\textbf``."""
    bold = bold or [[False] * len(headers) for _ in rows]
    spec = "l" + "r" * (len(headers) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    for index, (texts, flags) in enumerate(zip(rows, bold)):
        cells = [rf"\textbf{{{latex_escape(t)}}}" if f and t else latex_escape(t) for t, f in zip(texts, flags)]
        lines.append(" & ".join(cells) + r" \\")
        if index == len(rows) - 2 and headers[0] == "Attribute":
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
