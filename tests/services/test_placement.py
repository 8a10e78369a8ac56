"""Provider-side names: file id and deployment tag up front, never cut; the extension kept."""

from __future__ import annotations

from app.models import File
from app.services.deployment import new_tag
from app.services.placement import (
    PROVIDER_FILENAME_MAX,
    file_id_from_provider_name,
    parse_provider_name,
    provider_filename,
)

FILE_ID = "file-" + "aB3" * 8
TAG = "k3x9q0m2zt"


def named(filename: str) -> File:
    return File(id=FILE_ID, filename=filename)


def test_name_carries_id_tag_and_original() -> None:
    name = provider_filename(named("Q3 report__final.pdf"), tag=TAG)
    assert name == f"{FILE_ID}.{TAG}__Q3 report__final.pdf"
    parsed = parse_provider_name(name)
    assert parsed is not None and (parsed.file_id, parsed.tag) == (FILE_ID, TAG)


def test_long_names_are_cut_in_the_stem_keeping_head_and_extension() -> None:
    for original in ("r" * 255, "r" * 250 + ".xlsx", "é" * 240 + ".csv", "a." + "x" * 253):
        name = provider_filename(named(original), tag=TAG)
        assert len(name) <= PROVIDER_FILENAME_MAX
        assert name.startswith(f"{FILE_ID}.{TAG}__")
        assert file_id_from_provider_name(name, tag=TAG, registered=()) == FILE_ID
        if original.endswith((".xlsx", ".csv")):
            assert name.rsplit(".", 1)[1] == original.rsplit(".", 1)[1]


def test_only_our_tag_or_an_untagged_name_of_a_registered_file_is_ours() -> None:
    other = new_tag()
    assert other != TAG
    cases = {
        f"{FILE_ID}.{TAG}__a.pdf": FILE_ID,
        f"{FILE_ID}.{other}__a.pdf": None,
        f"{FILE_ID}__a.pdf": None,  # untagged, and this registry does not hold the id
        f"{FILE_ID}.{TAG.upper()}__a.pdf": None,
        f"{FILE_ID}.{TAG}x__a.pdf": None,
        f"{FILE_ID}.__a.pdf": None,
        f"{FILE_ID[:-1]}.{TAG}__a.pdf": None,
        f"{FILE_ID}.{TAG}.pdf": None,
        "report.pdf": None,
        "file-" + "é" * 24 + f".{TAG}__a.pdf": None,
    }
    for name, expected in cases.items():
        assert file_id_from_provider_name(name, tag=TAG, registered=()) == expected, name
    assert file_id_from_provider_name(f"{FILE_ID}__a.pdf", tag=TAG, registered={FILE_ID}) == FILE_ID
    other_id = "file-" + "Z" * 24
    assert file_id_from_provider_name(f"{other_id}__a.pdf", tag=TAG, registered={FILE_ID}) is None
