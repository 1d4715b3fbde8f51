"""The README's Python example runs as written (on a smaller venue)."""

from __future__ import annotations

from pathlib import Path


def test_readme_python_example_runs():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    start = text.index("```python\n") + len("```python\n")
    code = text[start:text.index("```", start)]
    assert "fr.generate.exchange(100_000" in code
    namespace: dict = {}
    exec(compile(code.replace("100_000", "2_000"), "README.md", "exec"), namespace)
    accounts, result = namespace["accounts"], namespace["result"]
    assert accounts.num_rows == result.accounts.num_rows == namespace["portfolio"].num_rows
    assert namespace["worst"].num_rows == 5
    assert namespace["liquidation"].num_rows > 0 and namespace["crash"].rounds.num_rows >= 1
    assert namespace["spread"].accounts.num_rows == accounts.num_rows


def test_readme_distributed_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = text.split("```python\n")
    first, distributed = (b[:b.index("```")] for b in (blocks[1], blocks[2]))
    assert "Engine(" in distributed
    monkeypatch.chdir(tmp_path)  # it writes venue/
    namespace: dict = {}
    exec(compile(first.replace("100_000", "2_000"), "README.md", "exec"), namespace)
    exec(compile(distributed, "README.md", "exec"), namespace)
    assert namespace["accounts"].equals(namespace["fr"].account_risk(namespace["market"], namespace["book"]))
    assert namespace["crash"].accounts.equals(
        namespace["fr"].cascade(namespace["market"], namespace["book"], {"BTC": -0.2}).accounts)
