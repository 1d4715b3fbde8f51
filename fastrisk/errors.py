"""The one exception fastrisk raises for bad input."""

from __future__ import annotations


class InputError(ValueError):
    """Input that violates the SPEC: names the table, the column, the rule and example rows.

    Attributes
    ----------
    table, column, rule : str
        Where the violation is and what rule it breaks.
    rows : list[int]
        Up to five offending row numbers (0-based, in the order the rows were given).
    count : int
        How many rows break the rule in total.
    examples : list[str] or None
        How the offending rows are shown (default: their row numbers).
    """

    def __init__(self, table: str, column: str, rule: str, rows=(), count: int | None = None,
                 examples: list[str] | None = None):
        self.table, self.column, self.rule = table, column, rule
        self.rows = [int(r) for r in rows][:5]
        self.count = len(self.rows) if count is None else int(count)
        self.examples = examples
        msg = f"{table}.{column}: {rule}"
        if self.count:
            shown = examples if examples else [f"row {r}" for r in self.rows]
            msg += f" ({self.count} offending row{'s' if self.count != 1 else ''}, e.g. " + "; ".join(shown) + ")"
        super().__init__(msg)

    def __reduce__(self):
        # Rebuilt from its fields, not from the message: the error crosses process boundaries (Dask workers).
        return InputError, (self.table, self.column, self.rule, self.rows, self.count, self.examples)
