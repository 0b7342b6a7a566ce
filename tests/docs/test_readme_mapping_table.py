"""The README's "Coming from ltx-trainer" table is the mapping table the code uses (config check/translate, train)."""

from __future__ import annotations

import re
from pathlib import Path

from trainer_core.config.foreign import RULES, mapping_table

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE = re.compile(r"<!-- mapping table: generated from trainer_core\.config\.foreign\.mapping_table\(\) -->\n"
                   r"(.*?)\n<!-- end of mapping table -->", re.DOTALL)


def test_readme_table_equals_the_modules_table():
    found = TABLE.findall(README.read_text(encoding="utf-8"))
    assert len(found) == 1, "README.md needs exactly one generated mapping table under 'Coming from ltx-trainer'"
    assert found[0] == mapping_table(), (
        "README.md's mapping table differs from trainer_core/config/foreign.py: paste the output of "
        "`python -c 'from trainer_core.config.foreign import mapping_table; print(mapping_table())'`"
    )
    assert len(found[0].splitlines()) == len(RULES) + 2  # header, rule, one row per key
