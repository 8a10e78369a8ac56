"""The printed report: one row per measurement against its target, then notes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    name: str
    measured: str
    baseline: str
    ratio: str
    target: str
    verdict: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append(Row(*cells))

    def render(self) -> str:
        header = Row("name", "measured", "baseline", "ratio", "target", "PASS/FAIL")
        rows = [header, *self.rows]
        cells = [(r.name, r.measured, r.baseline, r.ratio, r.target, r.verdict) for r in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(6)]

        def line(r: Row) -> str:
            row = (r.name, r.measured, r.baseline, r.ratio, r.target, r.verdict)
            return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

        out = [line(header), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in self.rows]
        if self.notes:
            out += ["", *self.notes]
        return "\n".join(out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
