"""Purpose aliases (app/core/purposes.py): one stored name, every spelling found."""

from __future__ import annotations

from app.core.purposes import canonical, spellings


def test_aliases_name_file_extract_and_other_purposes_stay() -> None:
    assert canonical("assistants") == canonical("user_data") == "file-extract"
    assert canonical("batch") == "batch"


def test_every_spelling_of_a_purpose_is_searched() -> None:
    assert spellings("user_data") == ("file-extract", "assistants", "user_data")
    assert spellings("file-extract") == spellings("assistants")
    assert spellings("batch") == ("batch",)
