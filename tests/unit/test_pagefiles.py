"""The pages' way back for a rollback: what the source accepts from the target's list."""

from __future__ import annotations

from pathlib import Path

import pytest
from ferry_helper import pagefiles
from ferry_wire import RemoteError


def test_the_list_names_each_page_image_and_its_size(tmp_path: Path) -> None:
    (tmp_path / "pagemap-1.img").write_bytes(b"m" * 450)
    (tmp_path / "pages-65537.img").write_bytes(b"p" * 8192)
    listed = pagefiles.manifest([tmp_path / "pagemap-1.img", tmp_path / "pages-65537.img"])
    assert listed == [
        {"name": "pagemap-1.img", "size": 450},
        {"name": "pages-65537.img", "size": 8192},
    ]
    assert pagefiles.checked_manifest({"files": listed}) == [
        ("pagemap-1.img", 450),
        ("pages-65537.img", 8192),
    ]


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (None, "missing"),
        ([{"name": "../../etc/passwd", "size": 1}], "not a page image"),
        ([{"name": "core-1.img", "size": 1}], "not a page image"),
        ([{"name": "pages-1.img/../x.img", "size": 1}], "not a page image"),
        ([{"name": "pages-1.img", "size": -1}], "not a size"),
        ([{"name": "pages-1.img", "size": "9"}], "not a size"),
        ([{"name": "pages-1.img", "size": 1}, {"name": "pages-1.img", "size": 1}], "twice"),
    ],
)
def test_anything_but_page_images_is_refused(files: object, problem: str) -> None:
    with pytest.raises(RemoteError, match=problem) as refused:
        pagefiles.checked_manifest({"files": files})
    assert refused.value.reason == "BadPages"
