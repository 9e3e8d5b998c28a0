"""``flame validate TEMPLATE [--catalogue FILE]``: parse and validate a media-service template offline (ORCH-2, ORCH-7).

Without a catalogue the placement and capacity rules are skipped; nothing is deployed and no service is contacted.
Every problem is printed as ``SEVERITY path: message (hint: ...)``. Exit 0 when there is no error, 1 when there is,
2 when a file cannot be read.
"""

from __future__ import annotations

from pathlib import Path

from flame_control.orchestrator.catalogue import parse_catalogue
from flame_control.orchestrator.model import Catalogue, Problem, Severity
from flame_control.orchestrator.validation import check_template


def format_problem(p: Problem, prefix: str = "") -> str:
    """One problem as a line."""
    path = f"{prefix}{p.path or '(document)'}"
    hint = f" (hint: {p.hint})" if p.hint else ""
    return f"{p.severity.value.upper()} {path}: {p.message}{hint}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"flame validate: cannot read {path}: {exc}")
        return None


def validate_command(path: Path, catalogue: Path | None = None) -> int:
    """Validate ``path`` (optionally against a catalogue file); print problems; 0 valid, 1 problems, 2 unreadable."""
    text = _read(path)
    if text is None:
        return 2
    cat: Catalogue | None = None
    failed = False
    if catalogue is not None:
        cat_text = _read(catalogue)
        if cat_text is None:
            return 2
        cat, cat_problems = parse_catalogue(cat_text)
        for p in cat_problems:
            print(format_problem(p, f"{catalogue}: "))
        failed = cat is None
    # The CLMC's information model is static (clmc.model): metrics are checked offline exactly as on a deploy.
    from clmc.model import information_model

    known = {m.name: {f.name for f in m.fields} for m in information_model().measurements}
    template, problems = check_template(text, cat, {}, known_metrics=known)
    for p in problems:
        print(format_problem(p))
    errors = sum(p.severity is Severity.ERROR for p in problems)
    if errors or failed:
        print(f"{path}: invalid ({errors} error(s))")
        return 1
    name = template.name if template is not None else "?"
    print(f"{path}: valid media service {name!r} ({len(problems)} warning(s))")
    return 0
